/* rankip.h — one entry of the operator's rankIps list, as plain data. The
 * server decodes it from /start and /update, the resource-config writer and
 * the cross-node code read it; it lives here so neither of those folders
 * has to include the other. */
#ifndef HP_RANKIP_H
#define HP_RANKIP_H

struct hp_rank_ip {
	int rank;
	char *ip; /* never NULL */
};

#endif
