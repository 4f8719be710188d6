/* The process workload of TestProcessCountsEveryForkThreadExecAndExit: known numbers of each thing the
 * process plugin counts, done by one process named dkprocwork and its children (which keep the name).
 *
 *   dkprocwork          forks 7 children that exit 0, 3 that exit 3, 1 killed by SIGTERM, 2 that exec
 *                       this program again ("exit0" mode) and exit 0, and 1 that exits 0 and stays a
 *                       zombie; creates 5 threads that exit; prints "ready" and waits for the end of
 *                       stdin; then reaps the zombie and exits 0.
 *   dkprocwork exit0    exits 0 (the exec'd children).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void wait_for(pid_t pid, int want_status)
{
	int st;

	if (waitpid(pid, &st, 0) != pid || st != want_status) {
		fprintf(stderr, "child %d: status %#x, want %#x\n", pid, st, want_status);
		exit(1);
	}
}

static void *thread_main(void *arg)
{
	return arg;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "exit0") == 0)
		return 0;
	if (argc > 1 && strcmp(argv[1], "oom") == 0) { /* a line on stdin (once in its cgroup), then allocate until killed */
		char line[8];

		if (!fgets(line, sizeof(line), stdin))
			return 1;
		for (;;) {
			char *p = malloc(1 << 20);

			if (!p)
				return 2;
			memset(p, 1, 1 << 20);
		}
	}
	for (int i = 0; i < 7; i++) {
		pid_t p = fork();
		if (p == 0)
			_exit(0);
		wait_for(p, 0);
	}
	for (int i = 0; i < 3; i++) {
		pid_t p = fork();
		if (p == 0)
			_exit(3);
		wait_for(p, 3 << 8);
	}
	pid_t killed = fork();
	if (killed == 0) {
		pause();
		_exit(0);
	}
	kill(killed, SIGTERM);
	wait_for(killed, SIGTERM);
	for (int i = 0; i < 2; i++) {
		pid_t p = fork();
		if (p == 0) {
			execl(argv[0], argv[0], "exit0", (char *)NULL); /* argv[0]: an absolute path, so the comm stays */
			_exit(127);
		}
		wait_for(p, 0);
	}
	for (int i = 0; i < 5; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL) || pthread_join(t, NULL)) {
			fprintf(stderr, "thread %d failed\n", i);
			return 1;
		}
	}
	pid_t zombie = fork();
	if (zombie == 0)
		_exit(0);
	/* The child is a zombie from its exit until the waitpid below. */
	siginfo_t si;
	if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT)) {
		perror("waitid");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (getchar() != EOF) /* until the test closes stdin */
		;
	wait_for(zombie, 0);
	return 0;
}
