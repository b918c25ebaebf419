module github.com/apcore-go/apcore/processtest

go 1.26.0

require (
	github.com/apcore-go/apcore v0.2.0
	github.com/apcore-go/apcore/redisstore v0.2.0
	github.com/apcore-go/apcore/sqlstore v0.2.0
	github.com/jackc/pgx/v5 v5.12.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	modernc.org/sqlite v1.62.0
)
