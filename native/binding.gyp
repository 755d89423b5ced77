{
  "targets": [
    {
      "target_name": "asm_spawn",
      "sources": ["spawn.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "asm_sandbox_init",
      "type": "executable",
      "sources": ["sandbox-init.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
