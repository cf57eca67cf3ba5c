/* main.c - `qvlm <command> [options]`: dispatch to the subcommands in commands.h. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

static const struct {
    const char *name;
    const char *help;
    int (*fn)(int, char **);
} COMMANDS[] = {
#define X(name, help) {#name, help, qvlm_cmd_##name},
    QVLM_COMMANDS(X)
#undef X
};

/* Command names are C identifiers; on the command line each '_' is written '-'. */
static int name_is(const char *arg, const char *name) {
    for (; *arg && *name; arg++, name++)
        if (*arg != (*name == '_' ? '-' : *name)) return 0;
    return *arg == *name;
}

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s", COMMANDS[i].name);
        for (char *c = name; *c; c++) *c = *c == '_' ? '-' : *c;
        fprintf(f, "  %-14s %s\n", name, COMMANDS[i].help);
    }
    fprintf(f, "\n`qvlm <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        if (name_is(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "qvlm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
