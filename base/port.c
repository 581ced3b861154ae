/* port.c — a TCP port the kernel says is free right now, for the
 * MASTER_PORT the agent hands its workers (torchrun's _get_free_port:
 * bind port 0, read it back, close). Racy by nature, as torchrun's. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hp.h"

int hp_free_port(bool any_addr)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = htonl(any_addr ? INADDR_ANY : INADDR_LOOPBACK),
	};
	socklen_t len = sizeof(sa);
	int rc = 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		rc = -errno;
	close(fd);
	return rc < 0 ? rc : ntohs(sa.sin_port);
}
