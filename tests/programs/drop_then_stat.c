/* drop_then_stat HOW DIR/FILE: stat and open the file, drop privileges by HOW with a raw system
 * call (no libc wrapper an agent could see), stat and open it again. Prints the outcomes.
 *   setresuid  all uids to 65534        setfsuid  only the filesystem uid to 65534
 *   capdrop    keep uid 0, drop every capability (capset) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *when, const char *path)
{
    struct stat st;
    int r = stat(path, &st);
    printf("%s: stat=%d errno=%s\n", when, r, r ? strerror(errno) : "0");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    printf("%s: open=%s errno=%s\n", when, fd >= 0 ? "ok" : "-1", fd >= 0 ? "0" : strerror(errno));
    if (fd >= 0)
        close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    show("before", argv[2]);
    if (strcmp(argv[1], "setresuid") == 0) {
        if (syscall(SYS_setresuid, 65534, 65534, 65534) != 0)
            return 3;
    } else if (strcmp(argv[1], "setfsuid") == 0) {
        syscall(SYS_setfsuid, 65534);
    } else if (strcmp(argv[1], "capdrop") == 0) {
        struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        memset(d, 0, sizeof(d));
        if (syscall(SYS_capset, &h, d) != 0)
            return 4;
    } else {
        return 2;
    }
    show("after", argv[2]);
    return 0;
}
