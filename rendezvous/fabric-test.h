/* fabric-test.h — a back door into the fabric wire format, for tests only:
 * it lets a test send a hand-made message (an old epoch, a wrong round) to
 * prove that the receiving side drops or queues it. The agent never
 * includes this header. */
#ifndef HP_FABRIC_TEST_H
#define HP_FABRIC_TEST_H

#include <stdint.h>

#include "rendezvous/fabric.h"

/* Wire operation codes (the "op" byte of every message header). */
enum hp_fabric_wire_op {
	HP_FABRIC_OP_BARRIER = 1,
	HP_FABRIC_OP_ALLGATHER = 2,
	HP_FABRIC_OP_BCAST = 3,
	HP_FABRIC_OP_STATUS = 4,
	HP_FABRIC_OP_ABORT = 5,
	HP_FABRIC_OP_BYE = 6,
};

struct hp_fabric_test_msg {
	unsigned op;
	uint64_t epoch;
	uint32_t seq;   /* which collective inside the epoch, from 0 */
	uint16_t round;
	uint32_t arg;   /* allgather: first record's rank; bcast: offset */
	uint32_t total; /* allgather: record length; bcast: total length */
	uint32_t count; /* allgather: records in this message */
	const void *payload;
	uint32_t len;
};

/* Sends m to rank dst as if it came from this rank, and waits up to
 * deadline_ms for the send to complete. Returns 0 or -errno. */
int hp_fabric_test_send(struct hp_fabric *f, unsigned dst,
			const struct hp_fabric_test_msg *m, int deadline_ms);

#endif
