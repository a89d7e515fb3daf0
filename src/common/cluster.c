/* cluster.c - cluster.conf parsing and writing, and placement by rendezvous hashing. */
#include "common/cluster.h"
#include "common/hash.h"
#include <fcntl.h>
#include <math.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int random_bytes(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

int hex_decode(const char *hex, uint8_t *out, size_t n)
{
	if (strlen(hex) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

const char *cluster_default_path(const char *explicit_path)
{
	if (explicit_path && *explicit_path)
		return explicit_path;
	const char *env = getenv("AQ_CLUSTER");
	if (env && *env)
		return env;
	return "./var/cluster.conf";
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

int cluster_load(const char *path, struct cluster_map *m, char *err, size_t err_size)
{
	memset(m, 0, sizeof *m);
	FILE *f = fopen(path, "r");
	if (!f) {
		int e = errno;
		snprintf(err, err_size, "cannot open cluster file %s: %s", path, strerror(e));
		return -e;
	}
	char line[512];
	int lineno = 0, rc = 0;
	bool have_secret = false;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		char *s = trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, err_size, "%s:%d: expected key = value", path, lineno);
			rc = -EINVAL;
			break;
		}
		*eq = 0;
		char *key = trim(s), *val = trim(eq + 1);
		if (!strcmp(key, "cluster_id")) {
			snprintf(m->cluster_id, sizeof m->cluster_id, "%s", val);
		} else if (!strcmp(key, "secret")) {
			if (hex_decode(val, m->secret, CLUSTER_SECRET_SIZE)) {
				snprintf(err, err_size, "%s:%d: secret must be %d hex digits", path, lineno,
					 2 * CLUSTER_SECRET_SIZE);
				rc = -EINVAL;
				break;
			}
			have_secret = true;
		} else if (!strcmp(key, "epoch")) {
			m->epoch = (uint32_t)strtoul(val, NULL, 10);
		} else if (!strcmp(key, "buckets")) {
			m->nbuckets = (uint32_t)strtoul(val, NULL, 10);
		} else if (!strcmp(key, "chunk_size")) {
			m->chunk_size = (uint32_t)strtoul(val, NULL, 10);
		} else if (!strcmp(key, "server")) {
			struct cluster_server sv = {0};
			char hostport[128];
			if (m->nservers >= CLUSTER_SERVERS_MAX || sscanf(val, "%u %127s", &sv.id, hostport) != 2) {
				snprintf(err, err_size, "%s:%d: expected server = ID HOST:PORT", path, lineno);
				rc = -EINVAL;
				break;
			}
			char *colon = strrchr(hostport, ':');
			if (!colon || colon == hostport || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
				snprintf(err, err_size, "%s:%d: bad address %s", path, lineno, hostport);
				rc = -EINVAL;
				break;
			}
			*colon = 0;
			memcpy(sv.addr, hostport, sizeof sv.addr);
			sv.port = (uint16_t)atoi(colon + 1);
			m->servers[m->nservers++] = sv;
		} else if (!strcmp(key, "target")) {
			struct cluster_target t = {0};
			if (m->ntargets >= AQ_TARGETS_MAX ||
			    sscanf(val, "%u %u %u", &t.id, &t.server, &t.weight) != 3 || t.weight == 0) {
				snprintf(err, err_size, "%s:%d: expected target = ID SERVER WEIGHT", path, lineno);
				rc = -EINVAL;
				break;
			}
			m->targets[m->ntargets++] = t;
		}
		/* unknown keys are ignored so newer files still load */
	}
	fclose(f);
	if (rc)
		return rc;
	if (!have_secret || !m->nservers || !m->ntargets || !m->nbuckets || m->nbuckets > AQ_BUCKETS_MAX ||
	    m->chunk_size < 4096 || m->chunk_size > AQ_CHUNK_SIZE_MAX) {
		snprintf(err, err_size, "%s: incomplete cluster file (needs secret, buckets 1..%d, chunk_size, "
			 "a server and a target)", path, AQ_BUCKETS_MAX);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < m->ntargets; i++)
		if (!cluster_server_by_id(m, m->targets[i].server)) {
			snprintf(err, err_size, "%s: target %u names unknown server %u", path, m->targets[i].id,
				 m->targets[i].server);
			return -EINVAL;
		}
	return 0;
}

int cluster_save(const char *path, const struct cluster_map *m)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "w");
	char secret[2 * CLUSTER_SECRET_SIZE + 1];
	hex_encode(m->secret, CLUSTER_SECRET_SIZE, secret);
	fprintf(f, "# Aquifer cluster map. It holds the cluster secret: keep it mode 0600.\n");
	fprintf(f, "cluster_id = %s\nsecret = %s\nepoch = %u\nbuckets = %u\nchunk_size = %u\n", m->cluster_id, secret,
		m->epoch, m->nbuckets, m->chunk_size);
	for (uint32_t i = 0; i < m->nservers; i++)
		fprintf(f, "server = %u %s:%u\n", m->servers[i].id, m->servers[i].addr, m->servers[i].port);
	for (uint32_t i = 0; i < m->ntargets; i++)
		fprintf(f, "target = %u %u %u\n", m->targets[i].id, m->targets[i].server, m->targets[i].weight);
	int rc = 0;
	if (fflush(f) || fsync(fd))
		rc = -errno;
	fclose(f);
	if (!rc && rename(tmp, path))
		rc = -errno;
	return rc;
}

void cluster_init_single(struct cluster_map *m, const char *host, uint16_t port, uint32_t ntargets,
			 uint32_t nbuckets, uint32_t chunk_size)
{
	memset(m, 0, sizeof *m);
	uint8_t id[16];
	random_bytes(id, sizeof id);
	hex_encode(id, sizeof id, m->cluster_id);
	random_bytes(m->secret, sizeof m->secret);
	m->epoch = 1;
	m->nbuckets = nbuckets;
	m->chunk_size = chunk_size;
	m->nservers = 1;
	m->servers[0].id = 0;
	snprintf(m->servers[0].addr, sizeof m->servers[0].addr, "%s", host);
	m->servers[0].port = port;
	m->ntargets = ntargets;
	for (uint32_t i = 0; i < ntargets; i++)
		m->targets[i] = (struct cluster_target){.id = i, .server = 0, .weight = 1};
}

uint32_t cluster_chunk_target(const struct cluster_map *m, uint64_t ino, uint32_t idx)
{
	AQ_ASSERT(m->ntargets > 0);
	uint64_t key = aq_mix64(ino, idx);
	double best = -1;
	uint32_t best_id = m->targets[0].id;
	for (uint32_t i = 0; i < m->ntargets; i++) {
		uint64_t h = aq_mix64(key, m->targets[i].id + 0x5bd1e995ull);
		/* weight / -ln(u), u uniform in (0,1): the weighted rendezvous score */
		double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
		double score = m->targets[i].weight / -log(u);
		if (score > best) {
			best = score;
			best_id = m->targets[i].id;
		}
	}
	return best_id;
}

uint32_t cluster_bucket_server(const struct cluster_map *m, uint32_t bucket)
{
	AQ_ASSERT(m->nservers > 0);
	return m->servers[bucket % m->nservers].id;
}

const struct cluster_server *cluster_server_by_id(const struct cluster_map *m, uint32_t id)
{
	for (uint32_t i = 0; i < m->nservers; i++)
		if (m->servers[i].id == id)
			return &m->servers[i];
	return NULL;
}

const struct cluster_target *cluster_target_by_id(const struct cluster_map *m, uint32_t id)
{
	for (uint32_t i = 0; i < m->ntargets; i++)
		if (m->targets[i].id == id)
			return &m->targets[i];
	return NULL;
}
