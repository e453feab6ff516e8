module millrace.dev/examples/go-seed

go 1.24
