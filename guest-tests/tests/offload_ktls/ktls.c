/* Kernel TLS through knic-offload, against Linux 6.12's own semantics: run under the
 * launcher, every socket here is a library socket on the library's loopback (the host
 * kernel has no `tls` ULP at all). A connected pair gets the `tls` ULP and AES-GCM-128
 * keys (client TX = server RX), then: the errno of every refused key set (no ULP, short,
 * a size no cipher has, a bad version, already set), record types both ways through cmsg
 * (TLS_SET_RECORD_TYPE, TLS_GET_RECORD_TYPE; EIO for a control record read without room,
 * as tls_sw_recvmsg does), malformed cmsgs, and sendfile from a host file into the
 * kTLS socket with the kernel's offset rules. Prints "ok" and exits 0, or names the
 * first check that failed and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static int failures;
#define CHECK(cond, ...)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "FAIL %s:%d: %s (errno %d %s): ", __FILE__, __LINE__, #cond, errno, \
              strerror(errno));                                                           \
      fprintf(stderr, __VA_ARGS__);                                                       \
      fprintf(stderr, "\n");                                                              \
      failures++;                                                                         \
    }                                                                                     \
  } while (0)
#define FAILS_WITH(expr, err) \
  do { errno = 0; long r_ = (long)(expr); CHECK(r_ == -1 && errno == (err), "%s gave %ld, want errno %d", #expr, r_, err); } while (0)

static void keys(struct tls12_crypto_info_aes_gcm_128 *k) {
  memset(k, 0, sizeof *k);
  k->info.version = TLS_1_2_VERSION;
  k->info.cipher_type = TLS_CIPHER_AES_GCM_128;
  for (int i = 0; i < TLS_CIPHER_AES_GCM_128_KEY_SIZE; i++) k->key[i] = (unsigned char)(i * 7 + 1);
  for (int i = 0; i < TLS_CIPHER_AES_GCM_128_IV_SIZE; i++) k->iv[i] = (unsigned char)(i + 3);
  for (int i = 0; i < TLS_CIPHER_AES_GCM_128_SALT_SIZE; i++) k->salt[i] = (unsigned char)(i + 9);
}

/* sendmsg of `len` bytes as one record of `type` (TLS_SET_RECORD_TYPE). */
static ssize_t send_record(int fd, unsigned char type, const void *buf, size_t len) {
  char control[CMSG_SPACE(1)];
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                     .msg_controllen = sizeof control};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(1);
  *CMSG_DATA(c) = type;
  return sendmsg(fd, &m, 0);
}

/* recvmsg with room for the record type (room 0: none); *type = -1 when no cmsg came. */
static ssize_t recv_record(int fd, void *buf, size_t len, int *type, size_t room, int *mflags) {
  char control[64];
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = room ? control : NULL,
                     .msg_controllen = room};
  ssize_t n = recvmsg(fd, &m, 0);
  *type = -1;
  if (mflags) *mflags = m.msg_flags;
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
      *type = *CMSG_DATA(c);
  return n;
}

static int read_full(int fd, unsigned char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

int main(void) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  CHECK(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0 &&
            getsockname(l, (struct sockaddr *)&a, &al) == 0,
        "listen");
  int c = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
  int s = accept(l, NULL, NULL);
  CHECK(s >= 0, "accept");

  struct tls12_crypto_info_aes_gcm_128 k;
  keys(&k);
  /* Without the ULP, SOL_TLS is an unknown level of a TCP socket. */
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, sizeof k), ENOPROTOOPT);
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, 5000), ENOPROTOOPT);
  FAILS_WITH(setsockopt(c, SOL_TCP, TCP_ULP, "nope", 4), ENOENT);
  CHECK(setsockopt(c, SOL_TCP, TCP_ULP, "tls", 3) == 0, "ULP on the client");
  CHECK(setsockopt(s, SOL_TCP, TCP_ULP, "tls", 3) == 0, "ULP on the server");
  FAILS_WITH(setsockopt(c, SOL_TCP, TCP_ULP, "tls", 3), EEXIST);
  char ulp[32] = {0};
  socklen_t ulen = sizeof ulp;
  CHECK(getsockopt(c, SOL_TCP, TCP_ULP, ulp, &ulen) == 0 && strcmp(ulp, "tls") == 0,
        "getsockopt(TCP_ULP) = \"%s\" (%u bytes)", ulp, ulen);

  /* Refused keys, each with do_tls_setsockopt_conf's errno. */
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, 2), EINVAL);
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, sizeof k + 1), EINVAL);
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, sizeof k - 1), EINVAL);
  static unsigned char big[5000];
  memcpy(big, &k, sizeof k);
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, big, sizeof big), EINVAL);
  /* A size that matches no cipher: only the header is read (the rest may be unmapped). */
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, 1 << 20), EINVAL);
  struct tls12_crypto_info_aes_gcm_128 bad = k;
  bad.info.version = 0x0302;
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &bad, sizeof bad), EINVAL);
  bad = k;
  bad.info.cipher_type = 99;
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &bad, sizeof bad), EINVAL);
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, NULL, sizeof k), EINVAL); /* sockptr_is_null */

  CHECK(setsockopt(c, SOL_TLS, TLS_TX, &k, sizeof k) == 0, "client TX keys");
  CHECK(setsockopt(s, SOL_TLS, TLS_RX, &k, sizeof k) == 0, "server RX keys");
  FAILS_WITH(setsockopt(c, SOL_TLS, TLS_TX, &k, sizeof k), EBUSY);
  struct tls12_crypto_info_aes_gcm_128 back;
  socklen_t bl = sizeof back;
  CHECK(getsockopt(c, SOL_TLS, TLS_TX, &back, &bl) == 0 && bl == sizeof back &&
            back.info.cipher_type == TLS_CIPHER_AES_GCM_128 && back.info.version == TLS_1_2_VERSION &&
            memcmp(back.key, k.key, sizeof k.key) == 0,
        "getsockopt(TLS_TX)");

  /* Application data: plain write, recvmsg reports type 23. */
  unsigned char buf[4096];
  int type, mflags;
  CHECK(write(c, "hello", 5) == 5, "write");
  ssize_t n = recv_record(s, buf, sizeof buf, &type, 64, NULL);
  CHECK(n == 5 && memcmp(buf, "hello", 5) == 0 && type == 23, "data record: %zd type %d: %02x %02x %02x", n, type, buf[0], buf[1], buf[2]);

  /* A control record (alert, 21): without room for the type the kernel says EIO and keeps
   * the record; with room it comes with its type. */
  CHECK(send_record(c, 21, "\x01\x00", 2) == 2, "send alert record");
  errno = 0;
  n = recv_record(s, buf, sizeof buf, &type, 0, NULL);
  CHECK(n == -1 && errno == EIO, "control record without room: %zd", n);
  n = recv_record(s, buf, sizeof buf, &type, 64, NULL);
  CHECK(n == 2 && type == 21 && buf[0] == 1 && buf[1] == 0, "alert record: %zd type %d", n, type);

  /* Room for a header but not the byte of data: MSG_CTRUNC, and then EIO for a control
   * record (tls_record_content_type). */
  CHECK(send_record(c, 22, "\x04\x00\x00\x00", 4) == 4, "send handshake record");
  errno = 0;
  n = recv_record(s, buf, sizeof buf, &type, sizeof(struct cmsghdr), &mflags);
  CHECK(n == -1 && errno == EIO, "control record with a short control buffer: %zd", n);
  n = recv_record(s, buf, sizeof buf, &type, 64, &mflags);
  CHECK(n == 4 && type == 22 && !(mflags & MSG_CTRUNC), "handshake record: %zd type %d", n, type);

  /* Malformed cmsgs: EINVAL, as CMSG_OK refuses them. */
  {
    char control[CMSG_SPACE(1)] = {0};
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                       .msg_controllen = sizeof control};
    struct cmsghdr *h = (struct cmsghdr *)control;
    h->cmsg_level = SOL_TLS;
    h->cmsg_type = TLS_SET_RECORD_TYPE;
    h->cmsg_len = 8; /* shorter than its header */
    FAILS_WITH(sendmsg(c, &m, 0), EINVAL);
    h->cmsg_len = sizeof control + 1; /* past the buffer */
    FAILS_WITH(sendmsg(c, &m, 0), EINVAL);
    /* More than net.core.optmem_max (128 KiB): the kernel cannot hold them. */
    static char huge[200000];
    m.msg_control = huge;
    m.msg_controllen = sizeof huge;
    FAILS_WITH(sendmsg(c, &m, 0), ENOBUFS);
  }

  /* sendfile from a host file into the kTLS socket: with an offset pointer the file
   * position stays, the offset advances; without one the position advances. */
  char path[] = "/tmp/knic-ktls-XXXXXX";
  int f = mkstemp(path);
  CHECK(f >= 0, "mkstemp");
  unlink(path);
  static unsigned char pattern[300000], got[300000];
  for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i * 2654435761u >> 13);
  CHECK(write(f, pattern, sizeof pattern) == (ssize_t)sizeof pattern, "write file");
  CHECK(lseek(f, 0, SEEK_SET) == 0, "rewind");
  off_t off = 1000;
  for (int i = 0; i < 4; i++) {
    ssize_t w = sendfile(c, f, &off, 50000);
    CHECK(w == 50000, "sendfile %d gave %zd", i, w);
    CHECK(read_full(s, got + 50000 * i, 50000) == 0, "read sendfile chunk %d", i);
  }
  CHECK(off == 201000, "offset after sendfile: %ld", (long)off);
  CHECK(lseek(f, 0, SEEK_CUR) == 0, "file position moved with an offset given");
  CHECK(memcmp(got, pattern + 1000, 200000) == 0, "sendfile bytes differ");
  CHECK(lseek(f, 290000, SEEK_SET) == 290000, "seek");
  ssize_t w = sendfile(c, f, NULL, 50000); /* only 10000 left */
  CHECK(w == 10000 && lseek(f, 0, SEEK_CUR) == 300000, "sendfile to EOF: %zd", w);
  CHECK(read_full(s, got, 10000) == 0 && memcmp(got, pattern + 290000, 10000) == 0, "tail");
  CHECK(sendfile(c, f, NULL, 50000) == 0, "sendfile at EOF");
  FAILS_WITH(sendfile(c, -1, NULL, 10), EBADF);
  int wo = open("/dev/null", O_WRONLY);
  FAILS_WITH(sendfile(c, wo, NULL, 10), EBADF);
  close(wo);

  close(f);
  close(c);
  close(s);
  close(l);
  if (failures) return 1;
  printf("ok\n");
  return 0;
}
