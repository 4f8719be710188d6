/* A threaded HTTPS server on the host's libssl.so.3, as a C service would write one: one thread per
 * connection, the TLS handshake either in the accepting thread (then the connection is handed over) or in
 * the connection's own thread. Keep-alive HTTP/1.x, each response in one SSL_write. It logs each request
 * by its own account as one JSON line (the tests' accessEntry): the bytes of the request it read (line,
 * headers, body) and of the response it wrote.
 *
 * usage: tls_server PORT LOG CERT KEY accept|worker */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static SSL_CTX *ctx;
static FILE *log_file;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int port, handshake_in_worker;

struct conn {
	int fd;
	SSL *ssl;
	char peer[64];
};

/* The value of header name in the head [head, end), or "" (copied into out, at most n-1 bytes). */
static void header(const char *head, const char *end, const char *name, char *out, size_t n)
{
	size_t l = strlen(name);
	out[0] = 0;
	for (const char *p = memmem(head, end - head, "\r\n", 2); p && p + 2 < end;
	     p = memmem(p + 2, end - p - 2, "\r\n", 2)) {
		const char *line = p + 2;
		if (end - line > (long)l && !strncasecmp(line, name, l) && line[l] == ':') {
			const char *v = line + l + 1, *e = memmem(v, end - v, "\r\n", 2);
			while (v < e && *v == ' ')
				v++;
			size_t m = e - v < (long)n - 1 ? (size_t)(e - v) : n - 1;
			memcpy(out, v, m);
			out[m] = 0;
			return;
		}
	}
}

static int status_of(const char *target, const char **reason)
{
	size_t l = strcspn(target, "?");
	if (l == 8 && !strncmp(target, "/missing", l))
		return *reason = "Not Found", 404;
	if (l == 5 && !strncmp(target, "/fail", l))
		return *reason = "Internal Server Error", 500;
	if (l == 6 && !strncmp(target, "/empty", l))
		return *reason = "No Content", 204;
	return *reason = "OK", 200;
}

/* Writes s as a JSON string (the targets and headers the tests send are printable ASCII). */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void *serve(void *arg)
{
	struct conn *c = arg;
	static const char body[] = "from a threaded C server\n";
	char buf[65536];
	size_t have = 0;

	if (handshake_in_worker && SSL_accept(c->ssl) != 1)
		goto out;
	for (;;) {
		char *end;
		while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
			int n = have < sizeof(buf) ? SSL_read(c->ssl, buf + have, sizeof(buf) - have) : 0;
			if (n <= 0)
				goto out;
			have += n;
		}
		end += 4;
		size_t head = end - buf;
		char method[16] = "", target[1024] = "", proto[16] = "", value[256], client[64], host[256];
		sscanf(buf, "%15s %1023s %15s", method, target, proto);
		header(buf, end, "Content-Length", value, sizeof(value));
		size_t want = head + strtoul(value, NULL, 10), used = have < want ? have : want, reqlen = used;
		/* A body longer than what is buffered is read and counted, not kept. */
		while (reqlen < want) {
			char skip[16384];
			size_t m = want - reqlen < sizeof(skip) ? want - reqlen : sizeof(skip);
			int n = SSL_read(c->ssl, skip, m);
			if (n <= 0)
				goto out;
			reqlen += n;
		}
		header(buf, end, "X-Truth-Client", client, sizeof(client));
		header(buf, end, "Host", host, sizeof(host));
		header(buf, end, "Connection", value, sizeof(value));
		int keep = strcmp(proto, "HTTP/1.0") ? strcasecmp(value, "close") : !strcasecmp(value, "keep-alive");

		const char *reason;
		int status = status_of(target, &reason);
		char resp[512];
		int n = snprintf(resp, sizeof(resp), "HTTP/1.1 %d %s\r\n", status, reason);
		if (status != 204)
			n += snprintf(resp + n, sizeof(resp) - n, "Content-Length: %zu\r\n", sizeof(body) - 1);
		if (!keep)
			n += snprintf(resp + n, sizeof(resp) - n, "Connection: close\r\n");
		n += snprintf(resp + n, sizeof(resp) - n, "\r\n");
		if (status != 204 && strcmp(method, "HEAD"))
			n += snprintf(resp + n, sizeof(resp) - n, "%s", body);
		if (SSL_write(c->ssl, resp, n) != n)
			goto out;

		pthread_mutex_lock(&log_mu);
		fprintf(log_file, "{\"Client\":");
		json_str(log_file, client[0] ? client : "-");
		fprintf(log_file, ",\"Method\":");
		json_str(log_file, method);
		fprintf(log_file, ",\"Target\":");
		json_str(log_file, target);
		fprintf(log_file, ",\"Status\":%d,\"ReqLen\":%zu,\"Sent\":%d,\"Proto\":", status, reqlen, n);
		json_str(log_file, proto);
		fprintf(log_file, ",\"Host\":");
		json_str(log_file, host);
		fprintf(log_file, ",\"Conn\":\"%s\",\"Port\":%d,\"RawConn\":\"-\"}\n", c->peer, port);
		fflush(log_file);
		pthread_mutex_unlock(&log_mu);

		memmove(buf, buf + used, have - used);
		have -= used;
		if (!keep)
			break;
	}
out:
	SSL_shutdown(c->ssl);
	SSL_free(c->ssl);
	close(c->fd);
	free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6 || (strcmp(argv[5], "accept") && strcmp(argv[5], "worker"))) {
		fprintf(stderr, "usage: %s PORT LOG CERT KEY accept|worker\n", argv[0]);
		return 2;
	}
	port = atoi(argv[1]);
	handshake_in_worker = !strcmp(argv[5], "worker");
	log_file = fopen(argv[2], "a");
	ctx = SSL_CTX_new(TLS_server_method());
	if (!log_file || !ctx || SSL_CTX_use_certificate_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1) {
		fprintf(stderr, "tls_server: cannot set up the log, the certificate or the key\n");
		return 1;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 128)) {
		perror("tls_server: listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct sockaddr_in pa;
		socklen_t pl = sizeof(pa);
		int fd = accept(ls, (struct sockaddr *)&pa, &pl);
		if (fd < 0)
			continue;
		struct conn *c = calloc(1, sizeof(*c));
		c->fd = fd;
		c->ssl = SSL_new(ctx);
		snprintf(c->peer, sizeof(c->peer), "%s:%d", inet_ntoa(pa.sin_addr), ntohs(pa.sin_port));
		SSL_set_fd(c->ssl, fd);
		if (!handshake_in_worker && SSL_accept(c->ssl) != 1) {
			SSL_free(c->ssl);
			close(fd);
			free(c);
			continue;
		}
		pthread_t t;
		pthread_create(&t, NULL, serve, c);
		pthread_detach(t);
	}
}
