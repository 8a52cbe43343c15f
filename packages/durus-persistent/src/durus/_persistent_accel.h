/* What the C files of durus._persistent_accel share. */
#ifndef DURUS_PERSISTENT_ACCEL_H
#define DURUS_PERSISTENT_ACCEL_H

#include <Python.h>

/* Adds the BTree functions (_accel_btree.c) to the module; -1 on error. */
int accel_btree_add(PyObject *module);

#endif
