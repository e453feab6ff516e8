module millrace.dev/examples/go-acme-iot

go 1.24

require millrace.dev/sdk v0.0.0

replace millrace.dev/sdk => ../../sdk-go
