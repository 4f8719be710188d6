module dkebpf

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/aquasecurity/libbpfgo v0.7.0-libbpf-1.4 // indirect
	github.com/influxdata/line-protocol/v2 v2.2.1 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
