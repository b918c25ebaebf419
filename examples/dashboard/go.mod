module github.com/apcore-go/apcore/examples/dashboard

go 1.26.0

require (
	github.com/apcore-go/apcore v0.2.0
	github.com/apcore-go/apcore/apcorehttp v0.2.0
	go.uber.org/goleak v1.3.0
)

require github.com/google/uuid v1.6.0 // indirect


