"""Source adapters: where protected disks are read from (one module per site kind)."""
