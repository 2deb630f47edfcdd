/* call_in_flight: one proxied write to stderr, its outcome on stdout ("answered" or the
 * errno), then a line that runs natively once the shard is dead. Started while its worker
 * is stopped, the write is a call in flight that no worker has taken. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    if (write(2, "in flight\n", 10) == 10)
        printf("answered\n");
    else
        printf("%d\n", errno);
    fflush(stdout);
    if (write(1, "native afterwards\n", 18) != 18)
        return 1;
    return 0;
}
