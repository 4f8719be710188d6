module dkebpf

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/aquasecurity/libbpfgo v0.7.0-libbpf-1.4
	github.com/creack/pty v1.1.24
	github.com/influxdata/line-protocol/v2 v2.2.1
	github.com/spf13/pflag v1.0.10
	go.etcd.io/bbolt v1.5.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require gopkg.in/natefinch/lumberjack.v2 v2.2.1 // indirect
