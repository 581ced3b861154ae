/* config.c — the two queries the agent makes of struct hp_config. Parsing
 * lives in launcher/config.c; this file must stay free of I/O too. */
#include "config.h"

enum hp_std hp_std_for_rank(const struct hp_std_spec *s, int rank)
{
	if (s->n == 0)
		return s->all;
	for (size_t i = 0; i < s->n; i++)
		if (s->ranks[i] == rank)
			return s->values[i];
	return HP_STD_NONE;
}

bool hp_config_rank_shown(const struct hp_config *c, int rank)
{
	if (!c->local_ranks_filter)
		return true;
	for (size_t i = 0; i < c->n_local_ranks_filter; i++)
		if (c->local_ranks_filter[i] == rank)
			return true;
	return false;
}
