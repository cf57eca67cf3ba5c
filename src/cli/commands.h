/* commands.h - the table of `qvlm <command>` subcommands.
 * Each command lives in src/cli/cmd_<name>.c and defines
 *   int qvlm_cmd_<name>(int argc, char **argv);   (argv[0] is the command name)
 * returning the process exit status. Add one line here per command. A '_' in the name is
 * typed as '-' on the command line (bench_matmul -> `qvlm bench-matmul`).
 */
#ifndef QVLM_CLI_COMMANDS_H
#define QVLM_CLI_COMMANDS_H

#define QVLM_COMMANDS(X) \
    X(version, "print the version") \
    X(bench_matmul, "CPU matrix-product speed vs memory bandwidth and peak FLOP/s")

#define X(name, help) int qvlm_cmd_##name(int argc, char **argv);
QVLM_COMMANDS(X)
#undef X

#endif /* QVLM_CLI_COMMANDS_H */
