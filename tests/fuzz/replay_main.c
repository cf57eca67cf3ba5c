/* replay_main.c - run a fuzz target over files, without libFuzzer.
 *   fuzz_replay_X CORPUS_DIR [DIR_OR_FILE...] [--prefix P]
 * Directories are walked one level deep. The first path is the target's own corpus and is
 * replayed whole; in the directories after it, with --prefix, only names starting with P are
 * used (regress/ holds the regressions of every target). Any crash, sanitizer report or leak
 * fails, and so does replaying nothing (a replay that runs no input cannot fail). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
        fclose(f);
        free(buf);
        return 0;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 1;
}

int main(int argc, char **argv) {
    const char *prefix = NULL;
    int n_files = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) prefix = argv[++i];
    int n_paths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--prefix") == 0) {
            i++;
            continue;
        }
        const char *filter = n_paths++ == 0 ? NULL : prefix;
        struct stat st;
        if (stat(argv[i], &st) != 0) continue;
        if (!S_ISDIR(st.st_mode)) {
            n_files += run_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (filter && strncmp(e->d_name, filter, strlen(filter)) != 0) continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            n_files += run_file(path);
        }
        if (d) closedir(d);
    }
    printf("replayed %d inputs\n", n_files);
    return n_files > 0 ? 0 : 1;
}
