/*
 * icmpcraft: a tiny packet tool for Clawy's test guest (busybox cannot craft
 * packets). Used by the ISO-3 rule-order test: one guest forges an ICMP error
 * against another guest's masqueraded UDP flow; the other guest keeps the flow
 * alive and counts the ICMP errors it receives.
 *
 *   icmpcraft send DST INNER_SRC INNER_DST INNER_SPORT INNER_DPORT MARK COUNT
 *       COUNT ICMP "port unreachable" errors to DST, 200 ms apart, each quoting
 *       a UDP packet INNER_SRC:INNER_SPORT -> INNER_DST:INNER_DPORT whose IP id is
 *       MARK. Prints sent=N.
 *   icmpcraft victim DST DPORT SPORT SECONDS MARK
 *       For SECONDS: a UDP datagram from SPORT to DST:DPORT every 200 ms (and
 *       one to DPORT+1, where nothing listens, every second: the genuine ICMP
 *       error that comes back proves this listener sees ICMP errors), while
 *       counting received ICMP errors by their quoted IP id. Prints
 *       udp_replies=N icmp_marked=N icmp_other=N.
 *
 * Built statically by scripts/build-test-guest.sh (gcc -static).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint16_t csum(const void *data, size_t len) {
    const uint8_t *p = data;
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1) sum += (uint32_t)(p[len - 1] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons((uint16_t)~sum);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static in_addr_t addr(const char *s) {
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", s);
        exit(2);
    }
    return a.s_addr;
}

static int do_send(char **argv) {
    in_addr_t dst = addr(argv[0]), isrc = addr(argv[1]), idst = addr(argv[2]);
    int sport = atoi(argv[3]), dport = atoi(argv[4]), mark = (int)strtol(argv[5], 0, 0);
    int count = atoi(argv[6]);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (fd < 0) { perror("socket"); return 1; }
    uint8_t pkt[8 + 20 + 8];
    memset(pkt, 0, sizeof pkt);
    struct icmphdr *icmp = (struct icmphdr *)pkt;
    icmp->type = ICMP_DEST_UNREACH;
    icmp->code = ICMP_PORT_UNREACH;
    struct iphdr *ip = (struct iphdr *)(pkt + 8);
    ip->version = 4;
    ip->ihl = 5;
    ip->tot_len = htons(20 + 8 + 4);
    ip->id = htons((uint16_t)mark);
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->saddr = isrc;
    ip->daddr = idst;
    ip->check = csum(ip, 20);
    struct udphdr *udp = (struct udphdr *)(pkt + 28);
    udp->source = htons((uint16_t)sport);
    udp->dest = htons((uint16_t)dport);
    udp->len = htons(8 + 4);
    udp->check = 0;
    icmp->checksum = csum(pkt, sizeof pkt);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = dst};
    int sent = 0;
    for (int i = 0; i < count; i++) {
        if (sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)sizeof pkt) sent++;
        usleep(200000);
    }
    printf("sent=%d\n", sent);
    return 0;
}

static int do_victim(char **argv) {
    in_addr_t dst = addr(argv[0]);
    int dport = atoi(argv[1]), sport = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int mark = (int)strtol(argv[4], 0, 0);
    int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    if (raw < 0 || udp < 0) { perror("socket"); return 1; }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sport)};
    if (bind(udp, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); return 1; }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = dst, .sin_port = htons((uint16_t)dport)};
    struct sockaddr_in closed = to;
    closed.sin_port = htons((uint16_t)(dport + 1));
    int replies = 0, marked = 0, other = 0, tick = 0;
    double end = now() + seconds, next = 0;
    while (now() < end) {
        if (now() >= next) {
            sendto(udp, "flow", 4, 0, (struct sockaddr *)&to, sizeof to);
            if (tick++ % 5 == 0) sendto(udp, "probe", 5, 0, (struct sockaddr *)&closed, sizeof closed);
            next = now() + 0.2;
        }
        struct pollfd fds[2] = {{raw, POLLIN, 0}, {udp, POLLIN, 0}};
        if (poll(fds, 2, 50) <= 0) continue;
        uint8_t buf[2048];
        if (fds[1].revents & POLLIN) {
            if (recv(udp, buf, sizeof buf, MSG_DONTWAIT) > 0) replies++;
        }
        if (fds[0].revents & POLLIN) {
            ssize_t n = recv(raw, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 20) continue;
            struct iphdr *outer = (struct iphdr *)buf;
            size_t off = (size_t)outer->ihl * 4;
            if ((size_t)n < off + 8 + 20) continue;
            struct icmphdr *icmp = (struct icmphdr *)(buf + off);
            if (icmp->type != ICMP_DEST_UNREACH) continue;
            struct iphdr *inner = (struct iphdr *)(buf + off + 8);
            if (ntohs(inner->id) == (uint16_t)mark) marked++;
            else other++;
        }
    }
    printf("udp_replies=%d icmp_marked=%d icmp_other=%d\n", replies, marked, other);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 9 && strcmp(argv[1], "send") == 0) return do_send(argv + 2);
    if (argc == 7 && strcmp(argv[1], "victim") == 0) return do_victim(argv + 2);
    fprintf(stderr, "usage: icmpcraft send DST INNER_SRC INNER_DST INNER_SPORT INNER_DPORT MARK COUNT\n"
                    "       icmpcraft victim DST DPORT SPORT SECONDS MARK\n");
    return 2;
}
