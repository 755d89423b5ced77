{
  "targets": [
    {
      "target_name": "asm_spawn",
      "sources": ["spawn.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
