// Package bpf is the kernel side of the collector: it loads the embedded CO-RE objects, attaches their
// programs from declarative hook tables and hands raw records to the decoders. It is the only package
// that uses cgo and libbpfgo.
package bpf

/*
// The Makefile links fully statically (-extldflags -static): datakit-ebpf runs on any host and kernel.
#cgo LDFLAGS: -lbpf -lelf -lz -Wl,--wrap=btf__load_vmlinux_btf
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>

struct btf *__real_btf__load_vmlinux_btf(void);

// libbpf parses the running kernel's BTF for every object it loads: btf__load_vmlinux_btf reads
// /sys/kernel/btf/vmlinux into a buffer and btf__new copies it into another, so twice the file's size
// (2 x 5 MB here) is the collector's memory at once. Since 6.16 the kernel lets the file be mapped (its
// pages are the kernel's, not the process's): then only btf__new's copy is. The binary is linked with
// --wrap=btf__load_vmlinux_btf, so libbpf's own calls come here too; where mapping fails (older
// kernels), libbpf's function does what it always did.
struct btf *__wrap_btf__load_vmlinux_btf(void)
{
	struct btf *btf = NULL;
	struct stat st;
	int fd = open("/sys/kernel/btf/vmlinux", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
		void *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (data != MAP_FAILED) {
			btf = btf__new(data, st.st_size);
			munmap(data, st.st_size);
		}
	}
	if (fd >= 0)
		close(fd);
	return btf ? btf : __real_btf__load_vmlinux_btf();
}

// Whether the running kernel's BTF names a type of this kind (e.g. "btf_trace_sock_send_length").
// The kernel's BTF (several MB parsed) is kept until release_kernel_btf.
static struct btf *kernel_btf;

static int kernel_has_type(const char *name, int kind)
{
	if (!kernel_btf)
		kernel_btf = btf__load_vmlinux_btf();
	if (!kernel_btf)
		return -1;
	return btf__find_by_name_kind(kernel_btf, name, kind) > 0;
}

static void release_kernel_btf(void)
{
	btf__free(kernel_btf);
	kernel_btf = NULL;
}

// The C heap is libbpf's: it parses the kernel's BTF (several MB, twice over while it reads the file)
// for each object it loads, and frees it after the load. glibc's defaults keep such memory: a freed
// mmapped block raises the mmap threshold to its size, so the next parse comes from a heap that is not
// given back, and each thread that calls into C gets its own arena. Fixed thresholds keep big blocks
// mmapped (returned at free), one arena serves the few C calls the collector makes, and trim_c_heap
// hands back what a load left free.
static void tune_c_heap(void)
{
	mallopt(M_MMAP_THRESHOLD, 128 << 10);
	mallopt(M_TRIM_THRESHOLD, 128 << 10);
	mallopt(M_ARENA_MAX, 1);
}

static void trim_c_heap(void) { malloc_trim(0); }

// Attaches an iterator program, to a map when map_fd >= 0 (libbpfgo v0.7.0 fills every member of the
// link-info union, overwriting map_fd with 0). Returns the link fd or a negative errno.
static int iter_link(int prog_fd, int map_fd)
{
	union bpf_iter_link_info linfo = {};
	LIBBPF_OPTS(bpf_link_create_opts, opts);
	if (map_fd >= 0) {
		linfo.map.map_fd = map_fd;
		opts.iter_info = &linfo;
		opts.iter_info_len = sizeof(linfo);
	}
	return bpf_link_create(prog_fd, 0, BPF_TRACE_ITER, &opts);
}

// Runs a raw_tp program once with args as its arguments (BPF_PROG_TEST_RUN). 0 or a negative errno;
// the program's return value in *retval.
static int run_raw_tp(int prog_fd, void *args, unsigned int size, unsigned int *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = size);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);
	*retval = opts.retval;
	return err;
}

// Reads up to *count keys of a hash map (and their values, which the kernel copies too) from the bucket
// *token names on, or from the start when first; *token then names where the next call starts. 0, -ENOENT
// once the map's end is reached (*count may still be above 0), or another negative errno.
static int map_keys(int fd, int first, __u32 *token, void *keys, void *vals, __u32 *count)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	return bpf_map_lookup_batch(fd, first ? NULL : token, token, keys, vals, count, &opts);
}
*/
import "C"

import (
	"dkebpf/kernel"

	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"unsafe"

	libbpfgo "github.com/aquasecurity/libbpfgo"
	"golang.org/x/sys/unix"
)

// ErrNotSupported marks a hook the running kernel does not offer.
var ErrNotSupported = errors.New("not supported by this kernel")

func init() {
	C.tune_c_heap()
	// libbpf prints through libbpfgo's logger ("libbpf: ..."); keep only warnings and errors, and while
	// an object loads, keep them for loadHooked instead (a refused program is reported, not dumped).
	libbpfgo.SetLoggerCbs(libbpfgo.Callbacks{
		Log: func(level int, msg string) {
			if verifierStats {
				printVerifierStats(msg)
			}
			if level > libbpfgo.LibbpfWarnLevel {
				return
			}
			libbpfLog.Lock()
			defer libbpfLog.Unlock()
			if libbpfLog.capture != nil {
				libbpfLog.capture.WriteString(msg)
				return
			}
			fmt.Fprint(os.Stderr, msg)
		},
	})
}

// verifierStats (DKEBPF_VERIFIER_STATS=1, developers): the kernel reports each program's verification
// statistics, printed one line per program: how much of the verifier's budget (1M instructions walked) each
// takes, the limit every change to the parser runs into first.
var verifierStats = os.Getenv("DKEBPF_VERIFIER_STATS") != ""

var verifierStatsRE = regexp.MustCompile(`(?s)prog '([^']+)'.*?(processed \d+ insns \(limit \d+\)[^\n]*)`)

func printVerifierStats(msg string) {
	if m := verifierStatsRE.FindStringSubmatch(msg); m != nil {
		fmt.Fprintf(os.Stderr, "verifier: %s: %s\n", m[1], m[2])
	}
}

// libbpfLog is where libbpf's messages go while an object loads.
var libbpfLog struct {
	sync.Mutex
	capture *strings.Builder
}

// testRunArgs is how many arguments a raw_tp program run by the collector takes (NF_LIVE_BATCH).
const testRunArgs = 12

// testRun runs a raw_tp program once with args (testRunArgs of them) as its arguments and returns what
// the program returned.
func testRun(progFD int, args []uint64) (uint32, error) {
	var ret C.uint
	if rc := C.run_raw_tp(C.int(progFD), unsafe.Pointer(&args[0]), C.uint(len(args)*8), &ret); rc < 0 {
		return 0, fmt.Errorf("run program: %w", unix.Errno(-rc))
	}
	return uint32(ret), nil
}

const (
	btfKindTypedef = C.BTF_KIND_TYPEDEF
	btfKindFunc    = C.BTF_KIND_FUNC
)

// kernelHasType says whether the running kernel's BTF has a type (btf_trace_<tracepoint> typedefs name
// the tracepoints tp_btf can attach to; FUNCs the functions).
func kernelHasType(name string, kind int) (bool, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	switch C.kernel_has_type(cname, C.int(kind)) {
	case -1:
		return false, errors.New("kernel BTF (/sys/kernel/btf/vmlinux) cannot be loaded")
	case 0:
		return false, nil
	}
	return true, nil
}

// releaseKernelBTF frees the parsed kernel BTF once the hooks are chosen (libbpf parses its own copy to
// load, so keeping ours would raise the collector's peak memory).
func releaseKernelBTF() {
	C.release_kernel_btf()
	trimCHeap()
}

// trimCHeap gives the C heap's free memory back to the kernel (after a load, libbpf's parse of the
// kernel's BTF is free but still resident).
func trimCHeap() { C.trim_c_heap() }

// openModule opens an embedded object without raising RLIMIT_MEMLOCK (which may be impossible; the
// kernel charges BPF memory to the cgroup since 5.11). libbpfgo's buffer loader always raises it, so
// the bytes go through a memfd and the file loader.
func openModule(name string, obj []byte) (*libbpfgo.Module, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := writeObject(f, obj); err != nil {
		return nil, fmt.Errorf("write %s to memfd: %w", name, err)
	}
	m, err := libbpfgo.NewModuleFromFileArgs(libbpfgo.NewModuleArgs{
		BPFObjPath:      fmt.Sprintf("/proc/self/fd/%d", fd),
		BPFObjName:      name,
		SkipMemlockBump: true,
		KernelLogLevel:  map[bool]uint32{true: 4}[verifierStats], // BPF_LOG_STATS
	})
	if err != nil {
		return nil, fmt.Errorf("open bpf object %s: %w", name, err)
	}
	return m, nil
}

// writeObject fills the memfd with obj. An embedded object lies in the executable's data segment, where
// reading it would make its pages (2 MB for both objects) resident for the collector's whole life: the
// kernel copies it from the executable file instead (sendfile), so the collector never touches it. An
// object that is not in the executable's mapping (read from --bpf-objects), or a copy whose start does
// not match, is written from memory.
func writeObject(f *os.File, obj []byte) error {
	if off, ok := exeOffset(obj); ok && copyFromExe(f, off, len(obj)) == nil {
		head := make([]byte, min(len(obj), 64))
		if n, err := f.ReadAt(head, 0); err == nil && n == len(head) && string(head) == string(obj[:len(head)]) {
			return nil
		}
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt(obj, 0)
	return err
}

// exeOffset is where obj's bytes are in the executable file, when obj lies in a file mapping of it.
func exeOffset(obj []byte) (int64, bool) {
	if len(obj) == 0 {
		return 0, false
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, false
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, false
	}
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(obj))))
	for _, line := range strings.Split(string(maps), "\n") {
		// start-end perms offset dev inode path
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[5] != exe {
			continue
		}
		var start, end, off uint64
		if _, err := fmt.Sscanf(fields[0]+" "+fields[2], "%x-%x %x", &start, &end, &off); err != nil {
			continue
		}
		if addr >= start && addr+uint64(len(obj)) <= end {
			return int64(addr - start + off), true
		}
	}
	return 0, false
}

// copyFromExe copies n bytes at off of the executable into f, in the kernel.
func copyFromExe(f *os.File, off int64, n int) error {
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer exe.Close()
	for n > 0 {
		w, err := unix.Sendfile(int(f.Fd()), int(exe.Fd()), &off, n)
		if err != nil {
			return err
		}
		if w == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= w
	}
	return nil
}

// iterLink is an attached iterator program; each read of the link starts a new walk.
type iterLink struct{ fd int }

// newIterLink attaches an iterator, over the map mapFD when it is >= 0.
func newIterLink(progFD, mapFD int) (*iterLink, error) {
	fd := C.iter_link(C.int(progFD), C.int(mapFD))
	if fd < 0 {
		return nil, fmt.Errorf("create iterator link: %w", unix.Errno(-fd))
	}
	return &iterLink{fd: int(fd)}, nil
}

// read runs the iterator once and returns everything it wrote.
func (l *iterLink) read() ([]byte, error) {
	var out []byte
	err := l.readEach(1, func(b []byte) { out = append(out, b...) })
	return out, err
}

// readEach runs the iterator and hands its output to fn as it is read, in whole records of recSize bytes
// (a read may end inside one: its rest comes with the next).
func (l *iterLink) readEach(recSize int, fn func([]byte)) error {
	fd := C.bpf_iter_create(C.int(l.fd))
	if fd < 0 {
		return fmt.Errorf("start iterator: %w", unix.Errno(-fd))
	}
	f := os.NewFile(uintptr(fd), "bpf-iter")
	defer f.Close()
	buf := make([]byte, 64<<10)
	held := 0 // bytes of a record cut by the last read, at buf's start
	for {
		n, err := unix.Read(int(fd), buf[held:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return fmt.Errorf("read iterator: %w", err)
		}
		if n == 0 {
			if held > 0 {
				return fmt.Errorf("read iterator: %d bytes after the last whole record", held)
			}
			return nil
		}
		n += held
		whole := n - n%recSize
		if whole > 0 {
			fn(buf[:whole])
		}
		held = copy(buf, buf[whole:n])
	}
}

// hashKeys hands a hash map's 8-byte keys to fn, a batch at a time: one system call per batch
// (BPF_MAP_LOOKUP_BATCH, 5.6+), where walking the keys with get_next_key takes one per key.
func hashKeys(m *libbpfgo.BPFMap, fn func(keys []uint64) error) error {
	const batch = 1024 // a bucket with more elements than this would fail (ENOSPC): far above any load factor
	if m.KeySize() != 8 {
		return fmt.Errorf("map %s: keys of %d bytes, not 8", m.Name(), m.KeySize())
	}
	keys := make([]uint64, batch)
	vals := make([]byte, batch*m.ValueSize())
	var token C.__u32
	for first := 1; ; first = 0 {
		count := C.__u32(batch)
		rc := C.map_keys(C.int(m.FileDescriptor()), C.int(first), &token, unsafe.Pointer(&keys[0]), unsafe.Pointer(&vals[0]), &count)
		if rc < 0 && rc != -C.ENOENT {
			return fmt.Errorf("read the keys of map %s: %w", m.Name(), unix.Errno(-rc))
		}
		if count > 0 {
			if err := fn(keys[:count]); err != nil {
				return err
			}
		}
		if rc == -C.ENOENT {
			return nil
		}
	}
}

func (l *iterLink) Destroy() error { return unix.Close(l.fd) }

// kernelAtLeast compares the running kernel's version with major.minor (an unreadable one counts as new).
func kernelAtLeast(major, minor int) bool {
	v, ok := kernel.Running()
	return !ok || v.AtLeast(kernel.Version{major, minor, 0})
}
