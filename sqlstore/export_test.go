package sqlstore

// ExplainQuery is explainQuery, for the tests that explain the store's
// queries their own way (EXPLAIN (FORMAT JSON) of a prepared statement).
var ExplainQuery = (*Store).explainQuery
