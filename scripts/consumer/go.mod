module example.com/apcore-consumer

go 1.26.0
