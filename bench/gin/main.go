// Command gin is the Gin peer in `cargo xtask bench server`: gin.Default()
// (its logger and recovery middleware included) with the same two routes,
// served from memory. Every other server's throughput is reported as a
// ratio to this one.
package main

import (
	"log"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"
)

type user struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"createdAt"`
}

const benchUserID = "01890a5d-ac96-774b-bcce-b302099a8057"

var users = map[string]user{
	benchUserID: {ID: benchUserID, Name: "Ada Lovelace", Email: "ada@example.com", CreatedAt: "2025-01-01T00:00:00Z"},
}

func main() {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	r := gin.Default()
	r.GET("/", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"message": "Hello from Gin"})
	})
	r.GET("/api/v1/users/:id", func(c *gin.Context) {
		u, ok := users[c.Param("id")]
		if !ok {
			c.JSON(http.StatusNotFound, gin.H{"message": "no user with this id"})
			return
		}
		c.JSON(http.StatusOK, u)
	})
	log.Printf("listening on %s", addr)
	log.Fatal(r.Run(addr))
}
