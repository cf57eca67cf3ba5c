/* commands.h - the table of `qvlm <command>` subcommands.
 * Each command lives in src/cli/cmd_<name>.c and defines
 *   int qvlm_cmd_<name>(int argc, char **argv);   (argv[0] is the command name)
 * returning the process exit status. Add one line here per command.
 */
#ifndef QVLM_CLI_COMMANDS_H
#define QVLM_CLI_COMMANDS_H

#define QVLM_COMMANDS(X) \
    X(version, "print the version") \
    X(template, "render the model's chat template for a JSON request on stdin")

#define X(name, help) int qvlm_cmd_##name(int argc, char **argv);
QVLM_COMMANDS(X)
#undef X

#endif /* QVLM_CLI_COMMANDS_H */
