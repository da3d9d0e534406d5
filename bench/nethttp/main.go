// Command nethttp is the net/http peer in `cargo xtask bench server`: the
// same two routes as gantry-server's benchmark, served from memory with the
// standard library alone.
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
)

type user struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"createdAt"`
}

var users = map[string]user{
	benchUserID: {ID: benchUserID, Name: "Ada Lovelace", Email: "ada@example.com", CreatedAt: "2025-01-01T00:00:00Z"},
}

const benchUserID = "01890a5d-ac96-774b-bcce-b302099a8057"

func main() {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"message": "Hello from net/http"})
	})
	mux.HandleFunc("GET /api/v1/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		u, ok := users[r.PathValue("id")]
		if !ok {
			http.Error(w, `{"message":"no user with this id"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(u)
	})
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
