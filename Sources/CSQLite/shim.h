// SQLite's process-wide settings, which Swift cannot reach itself:
// sqlite3_config is variadic.
#include <sqlite3.h>

// Turns off SQLite's memory statistics, and with them the global mutex it
// takes around every allocation and free. Only before SQLite initialises
// (the first connection opened): later it returns SQLITE_MISUSE and
// changes nothing.
static inline int psad_sqlite_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
