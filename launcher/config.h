/* config.h (launcher) — argv + environment -> struct hp_config.
 * A pure function: no I/O, no exit(), no globals, so every flag can be
 * unit-tested. Resolving --nproc-per-node=gpu|cpu|auto needs I/O and is
 * done by main.c afterwards. */
#ifndef HP_LAUNCHER_CONFIG_H
#define HP_LAUNCHER_CONFIG_H

#include <stddef.h>

#include "../agent/config.h"

enum hp_parse_result {
	HP_PARSE_OK = 0,
	HP_PARSE_HELP,    /* --help / -h: print hp_config_help(), exit 0 */
	HP_PARSE_VERSION, /* --version: print the version, exit 0 */
	HP_PARSE_ERROR,   /* err holds one line; print it + usage, exit 2 */
};

/* Fills *cfg (which the caller zeroes or not: it is overwritten) from argv
 * and from PET_<NAME> variables in envp for flags not given on the command
 * line. On HP_PARSE_ERROR, err (errlen bytes) holds a one-line reason and
 * cfg holds nothing that needs freeing beyond hp_config_fini(). */
enum hp_parse_result hp_config_parse(struct hp_config *cfg, int argc,
				     char *const argv[], char *const envp[],
				     char *err, size_t errlen);

/* Frees what hp_config_parse allocated; safe on a zeroed struct. */
void hp_config_fini(struct hp_config *cfg);

/* "usage: hyperpodrun [-h] [--nnodes NNODES] ... training_script ..." */
const char *hp_config_usage(void);

/* The full --help text: every flag, its default and meaning. */
const char *hp_config_help(void);

#endif
