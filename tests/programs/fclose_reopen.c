/* fopen/fclose/fopen files and write to each through write(fileno(f)).
 * glibc's fclose closes with its internal __close, which the agent never sees, so the
 * same descriptor number comes back for the next file: the worker must notice. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char path[4096], line[128];
    int i, j;

    if (argc != 2)
        return 2;
    for (i = 0; i < 40; i++) {
        FILE *keep = NULL, *f;
        snprintf(path, sizeof(path), "%s/file%02d", argv[1], i);
        f = fopen(path, "w");
        if (!f)
            return 1;
        if (i % 3 == 0) {                       /* sometimes a second file open at once */
            snprintf(path, sizeof(path), "%s/extra%02d", argv[1], i);
            keep = fopen(path, "w");
        }
        for (j = 0; j < 3; j++) {
            int n = snprintf(line, sizeof(line), "file %d line %d\n", i, j);
            if (write(fileno(f), line, (size_t)n) != n)
                return 1;
            if (keep && write(fileno(keep), "x", 1) != 1)
                return 1;
        }
        fclose(f);
        if (keep)
            fclose(keep);
    }
    return 0;
}
