//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthnet/berth/internal/testenv"
	"github.com/berthnet/berth/services"
)

// qemuKernelDir is where .ci/run unpacks Debian's cloud kernel package (dpkg-deb -x):
// boot/vmlinuz-* and lib/modules/*/kernel/...; BERTH_VM_KERNEL overrides it.
const qemuKernelDir = "/opt/berth-vm-kernel"

// qemuModules are the modules virtio-net needs in Debian's kernel, in load order.
var qemuModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net"}

// qemuBulk is the size of each transfer from the guest (kept small: the guest may run
// under TCG, without KVM).
const qemuBulk = 16 << 20

// cpioWriter writes a cpio archive in the "newc" format the kernel unpacks as its
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioWriter struct {
	b   bytes.Buffer
	ino int
}

func (w *cpioWriter) pad() {
	for w.b.Len()%4 != 0 {
		w.b.WriteByte(0)
	}
}

// add appends one entry: mode holds the type bits (0o100000 file, 0o040000 directory,
// 0o020000 character device), rdev the device's major and minor.
func (w *cpioWriter) add(name string, mode uint32, data []byte, rmajor, rminor int) {
	w.ino++
	fmt.Fprintf(&w.b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		w.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.b.WriteString(name)
	w.b.WriteByte(0)
	w.pad()
	w.b.Write(data)
	w.pad()
}

func (w *cpioWriter) bytes() []byte {
	w.add("TRAILER!!!", 0, nil, 0, 0)
	return w.b.Bytes()
}

// TestVMQEMU boots a Linux kernel in QEMU (TCG) with a
// busybox initramfs and its virtio-net NIC on `berth vm`'s stream socket (QEMU's
// -netdev stream, as with passt). The guest's kernel and busybox do what a VM does:
// udhcpc gets its lease from berth (address, router, DNS, MTU 65520), the kernel
// configures IPv6 by SLAAC from berth's router advertisements, it pings both gateways,
// and moves 16 MiB each way to the host's loopback over IPv4 and IPv6, SHA-256 checked.
func TestVMQEMU(t *testing.T) {
	testenv.NeedRoot(t)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	testenv.NeedCommand(t, "qemu-system-x86_64", err)
	busybox, err := exec.LookPath("busybox")
	testenv.NeedCommand(t, "busybox", err)
	kdir := qemuKernelDir
	if d := os.Getenv("BERTH_VM_KERNEL"); d != "" {
		kdir = d
	}
	kernels, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		err = errors.New("no boot/vmlinuz-* under " + kdir)
	}
	testenv.NeedCommand(t, "a Linux kernel for QEMU ("+kdir+", BERTH_VM_KERNEL)", err)
	kernel := kernels[len(kernels)-1]
	modDir := filepath.Join(kdir, "lib", "modules", strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"))

	bin := buildBerth(t)
	dir, err := os.MkdirTemp("", "bqm") // short: UNIX socket paths end at 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "vm.sock")
	errb := startVM(t, bin, sock)
	p4, p6 := sumServer(t, "127.0.0.1:0"), sumServer(t, "[::1]:0")

	var w cpioWriter
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib"} {
		w.add(d, 0o040755, nil, 0, 0)
	}
	w.add("dev/console", 0o020600, nil, 5, 1)
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	w.add("bin/busybox", 0o100755, bb, 0, 0)
	var insmods strings.Builder
	for _, m := range qemuModules {
		var found string
		filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == m+".ko" {
				found = p
			}
			return nil
		})
		if found == "" {
			t.Fatalf("module %s.ko not under %s", m, modDir)
		}
		b, err := os.ReadFile(found)
		if err != nil {
			t.Fatal(err)
		}
		w.add("lib/"+m+".ko", 0o100644, b, 0, 0)
		fmt.Fprintf(&insmods, "insmod /lib/%s.ko\n", m)
	}
	w.add("udhcpc.script", 0o100755, []byte(`#!/bin/sh
case "$1" in
bound|renew)
	ip addr add "$ip/$subnet" dev "$interface"
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	for r in $router; do ip route add default via "$r" dev "$interface"; done
	echo "RESULT lease ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu"
	;;
esac
`), 0, 0)
	w.add("init", 0o100755, []byte(fmt.Sprintf(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
%s
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 1 -s /udhcpc.script || echo "RESULT dhcp failed"
for i in $(seq 100); do
	ip -6 addr show dev eth0 scope global | grep -q fd00:: && ! ip -6 addr show dev eth0 | grep -q tentative && break
	sleep 0.1
done
echo "RESULT slaac $(ip -6 addr show dev eth0 scope global | grep -o 'fd00::[0-9a-f:]*/64')"
ping -c 2 -W 3 10.0.2.2 >/dev/null && echo "RESULT ping4 ok"
ping -6 -c 2 -W 3 fd00::2 >/dev/null && echo "RESULT ping6 ok"
# busybox wget posts its file as a C string: no NUL bytes in it.
head -c %[4]d /dev/urandom | tr -d '\000' > /tmp/up
echo "RESULT upsum $(sha256sum /tmp/up)"
echo "RESULT down4 $(wget -q -O - http://10.0.2.2:%[2]d/%[4]d | sha256sum)"
echo "RESULT down6 $(wget -q -O - 'http://[fd00::2]:%[3]d/%[4]d' | sha256sum)"
echo "RESULT up4 $(wget -q -O - --post-file=/tmp/up http://10.0.2.2:%[2]d/sum)"
echo "RESULT up6 $(wget -q -O - --post-file=/tmp/up 'http://[fd00::2]:%[3]d/sum')"
echo "RESULT done"
poweroff -f
`, insmods.String(), p4, p6, qemuBulk)), 0, 0)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, w.bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := []string{"-nographic", "-no-reboot", "-m", "512", "-smp", "1",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 loglevel=3",
		"-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=" + sock,
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"}
	// TCG, not KVM: nested KVM (this machine is itself a VM) hung the guest after the
	// boot loader, and TCG boots this kernel in about 3 s.
	accel := "tcg"
	args = append(args, "-accel", accel)
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	console := out.String()
	t.Logf("QEMU (%s) ran %v", accel, time.Since(start).Round(100*time.Millisecond))
	results := map[string]string{}
	for _, l := range strings.Split(console, "\n") {
		if i := strings.Index(l, "RESULT "); i >= 0 {
			k, v, _ := strings.Cut(strings.TrimSpace(l[i+len("RESULT "):]), " ")
			results[k] = v
		}
	}
	if _, ok := results["done"]; !ok || err != nil {
		t.Fatalf("the guest did not finish: %v\nconsole:\n%s\nberth vm: %s", err, console, errb.String())
	}
	h := sha256.New()
	io.Copy(h, services.NewPatternReader(qemuBulk))
	down := hex.EncodeToString(h.Sum(nil))
	up, _, _ := strings.Cut(results["upsum"], " ")
	checks := []struct{ key, want string }{
		{"lease", "ip=10.0.2.100 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 mtu=65520"},
		{"slaac", "fd00::"}, {"ping4", "ok"}, {"ping6", "ok"},
		{"down4", down}, {"down6", down}, {"up4", up}, {"up6", up},
	}
	for _, c := range checks {
		if c.want == "" || !strings.HasPrefix(results[c.key], c.want) {
			t.Errorf("guest %s: %q, want %q", c.key, results[c.key], c.want)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}
