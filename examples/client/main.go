// Command client is an example of the unitok Go client: it encodes one
// feature set on a running `unitok serve` and decodes it back.
//
//	unitok serve --checkpoint testdata/sample/model.safetensors &
//	go run ./examples/client --addr http://127.0.0.1:8080
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"time"

	"github.com/unitok/unitok/api"
)

func main() {
	addr := flag.String("addr", "http://127.0.0.1:8080", "server URL")
	token := flag.String("token", "", "bearer token, if the server wants one")
	n := flag.Int("tokens", 16, "tokens in the feature set")
	flag.Parse()
	c := api.NewClient(*addr)
	c.Token = *token
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Info(ctx)
	if err != nil {
		log.Fatal(err)
	}
	C, K := info.Model.InDim, info.Model.NumCodebooks
	fmt.Printf("server: device %s, C=%d K=%d V=%d\n", info.Device, C, K, info.Model.CodebookSize)
	x := make([]float32, *n*C)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	codes, err := c.Encode(ctx, x, 1, *n)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("codes of token 0: %v\n", codes[:K])
	back, err := c.Decode(ctx, codes, 1, *n)
	if err != nil {
		log.Fatal(err)
	}
	var num, den float64
	for i := range x {
		num += float64(x[i]) * float64(back[i])
		den += float64(x[i]) * float64(x[i])
	}
	fmt.Printf("decoded %d features; <x, decode(encode(x))> / |x|^2 = %.3f\n", len(back), num/den)
}
