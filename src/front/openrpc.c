/* openrpc.c — docs/openrpc.json, the front door described in OpenRPC, built
 * into the library (the `rpc.discover` answer): one file to keep, nothing
 * to find at run time. The assembler includes it as it is; make runs from
 * the top of the tree, and the Makefile names it as this object's input. */
#include "front/front_int.h"

__asm__(".section .rodata\n"
        ".global ts_openrpc_text\n"
        ".type ts_openrpc_text, @object\n"
        "ts_openrpc_text:\n"
        ".incbin \"docs/openrpc.json\"\n"
        ".byte 0\n"
        ".previous\n");

extern const char ts_openrpc_text[];

void front_answer_discover(ts_call_t *call)
{
    size_t len = strlen(ts_openrpc_text);
    while (len && ts_openrpc_text[len - 1] == '\n')
        len--;
    ts_call_set_result(call, ts_memdup(ts_openrpc_text, len), len);
}
