/* cmd_version.c - `qvlm version`. */
#include <stdio.h>

#include "cli/commands.h"

int qvlm_cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("qvlm 0.1.0\n");
    return 0;
}
