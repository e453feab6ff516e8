module millrace.dev/sdk

go 1.24
