#include "cli/commands.h"
int qvlm_cmd_serve(int argc, char **argv) { return 2; }
