/* Says whom it runs as and what it was given, then exits 3: the program the tests copy as a
   static, set-uid or set-gid binary. */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    printf("euid %d egid %d:", (int)geteuid(), (int)getegid());
    for (int i = 1; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    return 3;
}
