/* sigmask — prints "SigBlk: <hex>" and "SigIgn: <hex>" from
 * /proc/self/status as one line, "sigmask rank R SigBlk=... SigIgn=...".
 * A worker must start with nothing blocked and nothing ignored whatever
 * the agent inherited (tini's sigconf check). */
#include <stdio.h>
#include <string.h>

#include "helper.h"

int main(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return 99;
	char line[256], blk[64] = "?", ign[64] = "?";
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "SigBlk:", 7) == 0)
			sscanf(line + 7, " %63s", blk);
		else if (strncmp(line, "SigIgn:", 7) == 0)
			sscanf(line + 7, " %63s", ign);
	}
	fclose(f);
	helper_say("sigmask rank %s SigBlk=%s SigIgn=%s", helper_env("RANK", "?"),
		   blk, ign);
	return 0;
}
