package apcorehttp_test

import (
	"crypto/subtle"
	"log"
	"net/http"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

// Mount the dashboard under /admin/tasks/ behind your own authentication:
// here HTTP basic auth, in a real program whatever guards your admin
// pages. The handler adds none of its own.
func ExampleNewHandler() {
	mgr, err := apcore.NewTaskManager(apcore.NewRegistry())
	if err != nil {
		log.Fatal(err)
	}
	dashboard, err := apcorehttp.NewHandler(mgr) // or NewHandler(mgr, apcorehttp.ReadOnly())
	if err != nil {
		log.Fatal(err)
	}
	requireAdmin := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user, pass, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(user+":"+pass), []byte("admin:s3cret")) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="tasks"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/tasks/", requireAdmin(http.StripPrefix("/admin/tasks", dashboard)))
	_ = mux // http.ListenAndServe("127.0.0.1:8080", mux)
}
