// Command gotls runs package gotls as a program of its own, for httpflow's tests.
//
//	gotls server PORT LOG CERT KEY
//
// serves HTTPS on 127.0.0.1:PORT, logging each request as a JSON line to LOG; it prints "ready" once listening.
//
//	gotls client PORT
//
// prints "ready", waits for a line on its standard input, sends the client's mix and prints
// [[method, target, status], ...].
//
//	gotls h2client PORT
//
// the same with the HTTP/2 client's mix (gotls.H2Client).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"dkebpf/tests/integration/gotls"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 6 && os.Args[1] == "server":
		err = gotls.ListenAndServe(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case len(os.Args) == 3 && (os.Args[1] == "client" || os.Args[1] == "h2client"):
		fmt.Println("ready")
		if _, err = bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			break
		}
		base := "https://127.0.0.1:" + os.Args[2]
		var out [][]any
		if os.Args[1] == "client" {
			out, err = gotls.Client(base, filepath.Base(os.Args[0]))
		} else {
			out, err = gotls.H2Client(base)
		}
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(out)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: gotls server PORT LOG CERT KEY | gotls client PORT | gotls h2client PORT")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotls:", err)
		os.Exit(1)
	}
}
