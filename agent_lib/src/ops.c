/*
 * ops.c - the op table (LSCA_OPS in lsca_abi.h) as data: the C code asks it through
 * lsca_op_has(), Python reads it once through lsca_op_table() (lsca.ops).
 */
#include "lsca_abi.h"

#define LSCA_OP_LINE(NAME, lname, code, cls, fct, np, first, d0, d1)                              \
    [code] = {.name = #lname, .classes = (cls), .facts = (fct), .npaths = (np),                \
              .first_checked = (first), .dirfd_arg = {(d0), (d1)}},

const struct lsca_op_info lsca_ops[LSCA_OP_MAX] = {LSCA_OPS(LSCA_OP_LINE)};

const struct lsca_op_info *lsca_op_table(void)
{
    return lsca_ops;
}
