//go:build packetdrill

// The C side of the adapter: packetdrill_interface_init fills packetdrill's interface
// (packetdrill.h, from the packetdrill sources given to the build as an include path) with
// wrappers that turn the Go functions' "-errno" results into errno and -1, and unpack the
// variadic and packed arguments cgo cannot take directly.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include "packetdrill.h"

#ifndef TCP_CM_INQ
#define TCP_CM_INQ 36
#endif
#include "_cgo_export.h"

static long ret(long r) {
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static void w_free(void *u) { pdFree(); }
static int w_socket(void *u, int d, int t, int p) { return ret(pdSocket(d, t, p)); }
static int w_bind(void *u, int fd, const struct sockaddr *a, socklen_t l) { return ret(pdBind(fd, (void *)a, l)); }
static int w_listen(void *u, int fd, int b) { return ret(pdListen(fd, b)); }
static int w_accept(void *u, int fd, struct sockaddr *a, socklen_t *l) { return ret(pdAccept(fd, a, l)); }
static int w_connect(void *u, int fd, const struct sockaddr *a, socklen_t l) { return ret(pdConnect(fd, (void *)a, l)); }
static ssize_t w_read(void *u, int fd, void *b, size_t n) { return ret(pdRecv(fd, b, n, 0)); }
static ssize_t w_recv(void *u, int fd, void *b, size_t n, int f) { return ret(pdRecv(fd, b, n, f)); }
static ssize_t w_recvfrom(void *u, int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l) {
	if (l)
		*l = 0;
	return ret(pdRecv(fd, b, n, f));
}
static ssize_t w_readv(void *u, int fd, const struct iovec *iov, int cnt) { return ret(pdRecvIov(fd, (void *)iov, cnt, 0)); }
static ssize_t w_recvmsg(void *u, int fd, struct msghdr *m, int f) {
	long r = pdRecvIov(fd, m->msg_iov, m->msg_iovlen, f);
	long inq = r >= 0 ? pdInq(fd) : -1;
	m->msg_flags = 0;
	if (inq >= 0 && m->msg_control && m->msg_controllen >= CMSG_SPACE(sizeof(int))) {
		// TCP_INQ: what is left to read, as a control message (Linux's tcp_recvmsg).
		struct cmsghdr *c = CMSG_FIRSTHDR(m);
		c->cmsg_level = SOL_TCP;
		c->cmsg_type = TCP_CM_INQ;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		*(int *)CMSG_DATA(c) = (int)inq;
		m->msg_controllen = CMSG_SPACE(sizeof(int));
	} else {
		m->msg_controllen = 0;
	}
	return ret(r);
}
static ssize_t w_write(void *u, int fd, const void *b, size_t n) { return ret(pdSend(fd, (void *)b, n, 0)); }
static ssize_t w_send(void *u, int fd, const void *b, size_t n, int f) { return ret(pdSend(fd, (void *)b, n, f)); }
static ssize_t w_sendto(void *u, int fd, const void *b, size_t n, int f, const struct sockaddr *a, socklen_t l) {
	return ret(pdSendTo(fd, (void *)b, n, f, (void *)a, l));
}
static ssize_t w_writev(void *u, int fd, const struct iovec *iov, int cnt) { return ret(pdSendIov(fd, (void *)iov, cnt, 0)); }
static ssize_t w_sendmsg(void *u, int fd, const struct msghdr *m, int f) {
	return ret(pdSendIovTo(fd, m->msg_iov, m->msg_iovlen, f, m->msg_name, m->msg_namelen));
}
static int w_fcntl(void *u, int fd, int cmd, ...) {
	va_list ap;
	va_start(ap, cmd);
	long arg = va_arg(ap, long);
	va_end(ap);
	return ret(pdFcntl(fd, cmd, arg));
}
static int w_ioctl(void *u, int fd, unsigned long req, ...) {
	va_list ap;
	va_start(ap, req);
	int *arg = va_arg(ap, int *);
	va_end(ap);
	long r = pdIoctl(fd, req);
	if (r < 0)
		return ret(r);
	if (arg)
		*arg = (int)r;
	return 0;
}
static int w_close(void *u, int fd) { return ret(pdClose(fd)); }
static int w_shutdown(void *u, int fd, int how) { return ret(pdShutdown(fd, how)); }
static int w_getsockopt(void *u, int fd, int lv, int nm, void *v, socklen_t *l) {
	long r = pdGetsockopt(fd, lv, nm, v, *l);
	if (r < 0)
		return ret(r);
	*l = (socklen_t)r;
	return 0;
}
static int w_setsockopt(void *u, int fd, int lv, int nm, const void *v, socklen_t l) {
	return ret(pdSetsockopt(fd, lv, nm, (void *)v, l));
}
static int w_poll(void *u, struct pollfd *fds, nfds_t n, int timeout) { return ret(pdPoll(fds, n, timeout)); }
static int w_netdev_send(void *u, const void *b, size_t n) { return ret(pdNetdevSend((void *)b, n)); }
static int w_netdev_receive(void *u, void *b, size_t *n, long long *t) {
	long long at = 0;
	long r = pdNetdevReceive(b, *n, &at);
	if (r < 0)
		return ret(r);
	*n = (size_t)r;
	*t = at;
	return 0;
}
static int w_usleep(void *u, useconds_t us) { pdUsleep(us); return 0; }
static int w_gettimeofday(void *u, struct timeval *tv, struct timezone *tz) {
	long long us = pdGettimeofday();
	tv->tv_sec = us / 1000000;
	tv->tv_usec = us % 1000000;
	return 0;
}
static int w_epoll_create(void *u, int size) { return ret(pdEpollCreate(size)); }
static int w_epoll_ctl(void *u, int epfd, int op, int fd, struct epoll_event *ev) {
	uint32_t e = ev ? ev->events : 0;
	uint64_t d = ev ? ev->data.u64 : 0;
	return ret(pdEpollCtl(epfd, op, fd, e, d));
}
static int w_epoll_wait(void *u, int epfd, struct epoll_event *evs, int max, int timeout) {
	uint32_t e[64];
	uint64_t d[64];
	if (max > 64)
		max = 64;
	long r = pdEpollWait(epfd, e, d, max, timeout);
	if (r < 0)
		return ret(r);
	for (long i = 0; i < r; i++) {
		evs[i].events = e[i];
		evs[i].data.u64 = d[i];
	}
	return (int)r;
}
// pipe(2) is the C library's: a real pipe, whose descriptors are not berth's (packetdrill
// never closes a pipe; the shim's close passes such descriptors on). splice(2) from a
// berth socket writes into it (pdSplice).
static int w_pipe(void *u, int fds[2]) { return pipe(fds); }
static int w_splice(void *u, int in, loff_t *off_in, int out, loff_t *off_out, size_t n, unsigned int f) {
	return (int)ret(pdSplice(in, off_in, out, off_out, n, f));
}

// packetdrill's code events (%{ python }%) read TCP_INFO (and TCP_CC_INFO, SO_MEMINFO)
// with the C library's getsockopt on the socket under test, not through the interface.
// The runner preloads this library (LD_PRELOAD) so that this getsockopt answers those
// for berth's descriptors; everything else goes on to the C library's.
#ifndef TCP_CC_INFO
#define TCP_CC_INFO 26
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif
int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
	static int (*next)(int, int, int, void *, socklen_t *);
	if (((level == SOL_TCP && (name == TCP_INFO || name == TCP_CC_INFO)) ||
	     (level == SOL_SOCKET && name == SO_MEMINFO)) && pdIsSocket(fd))
		return w_getsockopt(NULL, fd, level, name, val, len);
	if (!next)
		next = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
	return next(fd, level, name, val, len);
}

// sendfile(2) is not in packetdrill's interface: it calls the C library's with the
// socket's descriptor. The preload answers it for berth's sockets: the file's bytes (a
// real descriptor) are read as the kernel would and written to the socket
// (tcp/sendfile/sendfile-simple.pkt).
static ssize_t berth_sendfile(int out, int in, off_t *off, size_t n) {
	char *buf = malloc(n ? n : 1);
	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	ssize_t r = off ? pread(in, buf, n, *off) : read(in, buf, n);
	if (r < 0) {
		free(buf);
		return -1;
	}
	long w = pdSend(out, buf, (size_t)r, 0);
	free(buf);
	if (w < 0) {
		errno = (int)-w;
		return -1;
	}
	if (off)
		*off += w;
	else if (w < r)
		lseek(in, (off_t)w - r, SEEK_CUR); // what the socket did not take stays unread
	return w;
}
ssize_t sendfile(int out, int in, off_t *off, size_t n) {
	static ssize_t (*next)(int, int, off_t *, size_t);
	if (pdIsSocket(out))
		return berth_sendfile(out, in, off, n);
	if (!next)
		next = (ssize_t (*)(int, int, off_t *, size_t))dlsym(RTLD_NEXT, "sendfile");
	return next(out, in, off, n);
}
ssize_t sendfile64(int out, int in, off_t *off, size_t n) {
	static ssize_t (*next)(int, int, off_t *, size_t);
	if (pdIsSocket(out))
		return berth_sendfile(out, in, off, n);
	if (!next)
		next = (ssize_t (*)(int, int, off_t *, size_t))dlsym(RTLD_NEXT, "sendfile64");
	return next(out, in, off, n);
}

// packetdrill closes the sockets a script left open with the C library's close
// (socket_close, at the end of a run): berth's descriptors go to berth (which gives back
// the real descriptor reserved under the same number), the rest to the C library.
int close(int fd) {
	static int (*next)(int);
	if (pdIsFile(fd))
		return w_close(NULL, fd);
	if (!next)
		next = (int (*)(int))dlsym(RTLD_NEXT, "close");
	return next(fd);
}

// packetdrill runs a script's shell commands (`sysctl ...`, `ip tcp_metrics flush`) with
// the C library's system(3): after each one the host applies what it changed to the
// berth stack (sock.Host.Command).
int system(const char *cmd) {
	static int (*next)(const char *);
	if (!next)
		next = (int (*)(const char *))dlsym(RTLD_NEXT, "system");
	int r = next(cmd), e = errno;
	if (cmd)
		pdCommand((char *)cmd);
	errno = e;
	return r;
}

// The preload is for packetdrill alone, not for the commands its scripts run.
__attribute__((constructor)) static void unpreload(void) { unsetenv("LD_PRELOAD"); }

void packetdrill_interface_init(const char *flags, struct packetdrill_interface *ifc) {
	pdInit((char *)flags);
	memset(ifc, 0, sizeof(*ifc));
	ifc->free = w_free;
	ifc->socket = w_socket;
	ifc->bind = w_bind;
	ifc->listen = w_listen;
	ifc->accept = w_accept;
	ifc->connect = w_connect;
	ifc->read = w_read;
	ifc->readv = w_readv;
	ifc->recv = w_recv;
	ifc->recvfrom = w_recvfrom;
	ifc->recvmsg = w_recvmsg;
	ifc->write = w_write;
	ifc->writev = w_writev;
	ifc->send = w_send;
	ifc->sendto = w_sendto;
	ifc->sendmsg = w_sendmsg;
	ifc->fcntl = w_fcntl;
	ifc->ioctl = w_ioctl;
	ifc->close = w_close;
	ifc->shutdown = w_shutdown;
	ifc->getsockopt = w_getsockopt;
	ifc->setsockopt = w_setsockopt;
	ifc->poll = w_poll;
	ifc->netdev_send = w_netdev_send;
	ifc->netdev_receive = w_netdev_receive;
	ifc->usleep = w_usleep;
	ifc->gettimeofday = w_gettimeofday;
	ifc->epoll_create = w_epoll_create;
	ifc->epoll_ctl = w_epoll_ctl;
	ifc->epoll_wait = w_epoll_wait;
	ifc->pipe = w_pipe;
	ifc->splice = w_splice;
}
