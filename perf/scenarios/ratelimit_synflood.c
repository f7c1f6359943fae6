/* ratelimit_synflood — load for perf/scenarios/ratelimit_bench.sh (not a test).
 *
 *   syn IFACE SRC_MAC DST_MAC SRC_IP DST_IP DPORT SECONDS
 *       raw TCP SYNs (valid checksums, a new source port each) from one source address,
 *       written to IFACE through AF_PACKET with sendmmsg, as fast as one core can;
 *   connect SRC_IP DST_IP DPORT SECONDS
 *       full TCP handshakes (non-blocking connect, then close), up to 256 in flight:
 *       what an accept-time limiter in userspace has to face.
 *
 * Prints "sent N" (syn) or "connects N" (connect) on stdout. Run inside the client
 * namespace; needs CAP_NET_RAW for syn.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sendmmsg */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME_LEN (14 + 20 + 20)

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint16_t csum(const void *p, size_t n, uint32_t sum)
{
	const uint8_t *b = p;

	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (n & 1)
		sum += (uint32_t)b[n - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static int parse_mac(const char *s, uint8_t out[6])
{
	unsigned v[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		out[i] = (uint8_t)v[i];
	return 0;
}

static void build(uint8_t *f, const uint8_t *smac, const uint8_t *dmac, struct in_addr src,
		  struct in_addr dst, uint16_t sport, uint16_t dport, uint32_t seq)
{
	struct ether_header *eh = (struct ether_header *)f;
	struct iphdr *ip = (struct iphdr *)(f + 14);
	struct tcphdr *th = (struct tcphdr *)(f + 34);
	uint8_t pseudo[12];
	uint32_t sum = 0;

	memcpy(eh->ether_dhost, dmac, 6);
	memcpy(eh->ether_shost, smac, 6);
	eh->ether_type = htons(ETHERTYPE_IP);
	memset(ip, 0, 20);
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons(40);
	ip->ttl = 64;
	ip->protocol = IPPROTO_TCP;
	ip->saddr = src.s_addr;
	ip->daddr = dst.s_addr;
	ip->check = htons(csum(ip, 20, 0));
	memset(th, 0, 20);
	th->source = htons(sport);
	th->dest = htons(dport);
	th->seq = htonl(seq);
	th->doff = 5;
	th->syn = 1;
	th->window = htons(64240);
	memcpy(pseudo, &ip->saddr, 4);
	memcpy(pseudo + 4, &ip->daddr, 4);
	pseudo[8] = 0;
	pseudo[9] = IPPROTO_TCP;
	pseudo[10] = 0;
	pseudo[11] = 20;
	for (int i = 0; i < 12; i += 2)
		sum += (uint32_t)(pseudo[i] << 8 | pseudo[i + 1]);
	th->check = htons(csum(th, 20, sum));
}

static int syn_flood(char **a)
{
	uint8_t smac[6], dmac[6], frames[BATCH][FRAME_LEN];
	struct in_addr src, dst;
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_halen = 6};
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned dport = (unsigned)atoi(a[5]);
	double secs = atof(a[6]), end;
	uint64_t sent = 0;
	uint32_t seq = 1;
	uint16_t sport = 1024;
	int fd, one = 1;

	if (parse_mac(a[1], smac) || parse_mac(a[2], dmac) || inet_pton(AF_INET, a[3], &src) != 1 ||
	    inet_pton(AF_INET, a[4], &dst) != 1 || !dport || dport > 65535 || !(secs > 0)) {
		fprintf(stderr, "synflood: bad arguments\n");
		return 2;
	}
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("synflood: socket(AF_PACKET)");
		return 1;
	}
	ll.sll_ifindex = (int)if_nametoindex(a[0]);
	memcpy(ll.sll_addr, dmac, 6);
	if (!ll.sll_ifindex) {
		perror("synflood: interface");
		return 1;
	}
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){.iov_base = frames[i], .iov_len = FRAME_LEN};
		msgs[i].msg_hdr = (struct msghdr){.msg_name = &ll,
						  .msg_namelen = sizeof(ll),
						  .msg_iov = &iov[i],
						  .msg_iovlen = 1};
	}
	end = now_s() + secs;
	while (now_s() < end) {
		for (int i = 0; i < BATCH; i++) {
			build(frames[i], smac, dmac, src, dst, sport, (uint16_t)dport, seq);
			seq += 7919;
			sport = sport == 65535 ? 1024 : sport + 1;
		}
		int n = sendmmsg(fd, msgs, BATCH, 0);
		if (n > 0)
			sent += (uint64_t)n;
		else if (errno != ENOBUFS && errno != EAGAIN)
			break;
	}
	printf("sent %llu\n", (unsigned long long)sent);
	close(fd);
	return 0;
}

static int connect_flood(char **a)
{
	struct sockaddr_in s = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	struct pollfd pfd[256];
	double secs = atof(a[3]), end;
	uint64_t done = 0;

	if (inet_pton(AF_INET, a[0], &s.sin_addr) != 1 ||
	    inet_pton(AF_INET, a[1], &d.sin_addr) != 1 || !(secs > 0)) {
		fprintf(stderr, "synflood: bad arguments\n");
		return 2;
	}
	d.sin_port = htons((uint16_t)atoi(a[2]));
	for (int i = 0; i < 256; i++)
		pfd[i] = (struct pollfd){.fd = -1};
	end = now_s() + secs;
	while (now_s() < end) {
		for (int i = 0; i < 256; i++) {
			if (pfd[i].fd >= 0)
				continue;
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			struct linger lg = {.l_onoff = 1,
					    .l_linger = 0}; /* RST: no TIME_WAIT pile */
			if (fd < 0)
				break;
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			if (bind(fd, (struct sockaddr *)&s, sizeof(s)) ||
			    (connect(fd, (struct sockaddr *)&d, sizeof(d)) &&
			     errno != EINPROGRESS)) {
				close(fd);
				continue;
			}
			pfd[i] = (struct pollfd){.fd = fd, .events = POLLOUT};
		}
		if (poll(pfd, 256, 10) < 0)
			break;
		for (int i = 0; i < 256; i++)
			if (pfd[i].fd >= 0 && pfd[i].revents) {
				done++;
				close(pfd[i].fd);
				pfd[i].fd = -1;
			}
	}
	for (int i = 0; i < 256; i++)
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	printf("connects %llu\n", (unsigned long long)done);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 9 && !strcmp(argv[1], "syn"))
		return syn_flood(argv + 2);
	if (argc == 6 && !strcmp(argv[1], "connect"))
		return connect_flood(argv + 2);
	fprintf(stderr,
		"usage: %s syn IFACE SRC_MAC DST_MAC SRC_IP DST_IP DPORT SECONDS\n"
		"       %s connect SRC_IP DST_IP DPORT SECONDS\n",
		argv[0], argv[0]);
	return 2;
}
