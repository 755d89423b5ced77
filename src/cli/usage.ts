/** The `asm` command's usage text, printed by `asm help` and with a refused command line. */

export const WORKER_USAGE = `  asm worker [--name N] [--pool P] [--providers a,b] [--workspace-root D] [--capacity K] [--cookie C] [--metrics-port M]
             [--files-port F [--files-host H]]
                                 a worker node of a distributed deployment (REDIS_URL): executes the
                                 remote_node runs handed to it (driver_opts.remote_node "N" or "pool:P");
                                 defaults: name the host name, pool default, every provider,
                                 ASM_WORKSPACE_ROOT, capacity 2, cookie ASM_NODE_COOKIE; with
                                 --metrics-port, its own /metrics (admins) on ASM_HOST:M; with
                                 --files-port, the files of the workspaces it holds, to the API
                                 processes, on ASM_HOST:F (0: any free port), reached at
                                 http://H:F (H: ASM_HOST, or the host name if ASM_HOST is 0.0.0.0/::)`;

export const USAGE = `asm — Agent Session Manager

Usage:
  asm serve                      start the service (configured by ASM_* environment variables)
${WORKER_USAGE}
  asm run --provider P [--cwd D] [--model M] [--permission-mode M] [--url URL] [--api-key K] PROMPT
                                 run one prompt through a running service, streaming its events;
                                 approvals are asked on the terminal, Ctrl-C interrupts the run
  asm help                       this text
`;
