/* The command's child makes the run's first traced call; the command's own comes after it.
   Each says its pid in the line it writes, so a test can check whose line is labelled. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *who)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%s %d\n", who, (int)getpid());
    if (write(1, line, (size_t)n) != n)
        _exit(1);
}

int main(void)
{
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        say("child");
        _exit(0);
    }
    waitpid(child, NULL, 0);    /* not proxied: the child's write is the first traced call */
    say("parent");
    return 0;
}
