/* exec_chain MODE N [ARGS...]: execs itself N times, one proxied write per image, then
 * the last image does what MODE says. Used to check that an exec keeps the shard only
 * when nothing else can take the descriptor channel across it.
 *   plain     execl itself; the last image prints its environment's LSCA_ variables
 *   threaded  like plain, with a second thread alive during every exec
 *   noenv     the last exec goes to ARGS[0] with an empty environment (no agent loaded)
 *   target    the last exec goes to ARGS (execv: argv as given) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static void *sleeper(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *mode = argv[1];
    int n = atoi(argv[2]);
    char count[16];

    if (write(1, "", 0) != 0)               /* proxied in every image */
        return 3;
    if (n > 0) {
        pthread_t t;
        if (strcmp(mode, "threaded") == 0 && pthread_create(&t, NULL, sleeper, NULL) != 0)
            return 4;
        snprintf(count, sizeof(count), "%d", n - 1);
        argv[2] = count;
        execv("/proc/self/exe", argv);
        perror("execv");
        return 5;
    }
    if (strcmp(mode, "noenv") == 0 && argc > 3) {
        char *empty[] = { NULL };
        execve(argv[3], argv + 3, empty);
        perror("execve");
        return 6;
    }
    if (strcmp(mode, "target") == 0 && argc > 3) {
        execv(argv[3], argv + 3);
        perror("execv");
        return 7;
    }
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "LSCA_", 5) == 0)
            printf("%.*s\n", (int)strcspn(*e, "="), *e);
    return 0;
}
