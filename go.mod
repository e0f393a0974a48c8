module github.com/ferry-nb/ferry

go 1.26.8

require (
	github.com/coder/websocket v1.8.15
	github.com/klauspost/compress v1.20.4
	github.com/pebbe/zmq4 v1.4.0
	golang.org/x/term v0.48.0
	gopkg.in/yaml.v3 v3.0.1
)

require golang.org/x/sys v0.50.0 // indirect
