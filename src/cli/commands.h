/* commands.h - the table of `qvlm <command>` subcommands.
 * Each command lives in src/cli/cmd_<name>.c and defines
 *   int qvlm_cmd_<name>(int argc, char **argv);   (argv[0] is the command name)
 * returning the process exit status. Add one line here per command. On the command line an
 * underscore in <name> is written as a hyphen (bench_tokenizer -> `qvlm bench-tokenizer`).
 */
#ifndef QVLM_CLI_COMMANDS_H
#define QVLM_CLI_COMMANDS_H

#define QVLM_COMMANDS(X) \
    X(verify, "compare against a transformers reference fixture") \
    X(synth, "write a random-weight checkpoint in the Hub layout") \
    X(bench, "measure prefill and decode speed") \
    X(version, "print the version") \
    X(tokenize, "text on stdin -> token ids (JSON)") \
    X(detokenize, "token ids (JSON) on stdin -> text") \
    X(bench_tokenizer, "tokenizer load time and encode MB/s") \
    X(template, "render the model's chat template for a JSON request on stdin") \
    X(bench_matmul, "CPU matrix-product speed vs memory bandwidth and peak FLOP/s") \
    X(run, "answer one prompt (with images), streamed") \
    X(chat, "interactive image chat with the cross-turn cache") \
    X(serve, "OpenAI-compatible HTTP server with a web page")

#define X(name, help) int qvlm_cmd_##name(int argc, char **argv);
QVLM_COMMANDS(X)
#undef X

#endif /* QVLM_CLI_COMMANDS_H */
