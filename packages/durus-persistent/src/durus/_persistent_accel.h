/* What the C files of durus._persistent_accel share: the persistent object's
 * C fields and the recent-objects list threaded through them. */
#ifndef DURUS_PERSISTENT_ACCEL_H
#define DURUS_PERSISTENT_ACCEL_H

#include <Python.h>

#define UNSAVED 1
#define SAVED 0
#define GHOST (-1)

typedef struct RecentObject RecentObject;

typedef struct PBObject {
    PyObject_HEAD
    PyObject *connection;
    PyObject *oid;
    long long serial;
    int status;
    /* Set only on a ghost that new_ghost made with PersistentBase.__new__ and
     * that nothing has written to since: it has no instance attributes at
     * all, so loading it needs no clearing (set_pristine_state). */
    char pristine;
    /* Links of the recent-objects list; ring is NULL when not in one. */
    struct PBObject *prev;
    struct PBObject *next;
    RecentObject *ring;
} PBObject;

struct RecentObject {
    PyObject_HEAD
    PBObject *first;
    PBObject *last;
    Py_ssize_t length;
};

extern PyTypeObject PBType;      /* _persistent_accel.c */
extern PyTypeObject RecentType;  /* _accel_recent.c */

#define PB_Check(op) PyObject_TypeCheck(op, &PBType)

/* op as a persistent object, or NULL with a TypeError. */
PBObject *accel_as_pb(PyObject *op);

/* Adds the BTree functions (_accel_btree.c) to the module; -1 on error. */
int accel_btree_add(PyObject *module);

/* -- the recent-objects list ------------------------------------------------ */

static inline void
ring_unlink(RecentObject *ring, PBObject *obj)
{
    if (obj->prev != NULL) {
        obj->prev->next = obj->next;
    }
    else {
        ring->first = obj->next;
    }
    if (obj->next != NULL) {
        obj->next->prev = obj->prev;
    }
    else {
        ring->last = obj->prev;
    }
    obj->prev = obj->next = NULL;
    obj->ring = NULL;
    ring->length--;
}

static inline void
ring_link_last(RecentObject *ring, PBObject *obj)
{
    obj->prev = ring->last;
    obj->next = NULL;
    if (ring->last != NULL) {
        ring->last->next = obj;
    }
    else {
        ring->first = obj;
    }
    ring->last = obj;
    obj->ring = ring;
    ring->length++;
}

static inline void
ring_link_first(RecentObject *ring, PBObject *obj)
{
    obj->next = ring->first;
    obj->prev = NULL;
    if (ring->first != NULL) {
        ring->first->prev = obj;
    }
    else {
        ring->last = obj;
    }
    ring->first = obj;
    obj->ring = ring;
    ring->length++;
}

/* Take obj out of whatever list holds it; its reference goes to the caller. */
static inline int
ring_take(PBObject *obj)
{
    if (obj->ring == NULL) {
        Py_INCREF(obj);
        return 0;
    }
    ring_unlink(obj->ring, obj);
    return 1;
}

/* obj becomes the most recently accessed object of ring. */
static inline void
ring_touch(RecentObject *ring, PBObject *obj)
{
    if (obj->ring == ring) {
        if (ring->last != obj) {
            ring_unlink(ring, obj);
            ring_link_last(ring, obj);
        }
        return;
    }
    ring_take(obj);
    ring_link_last(ring, obj);
}

#endif
