/* The connection's recently accessed objects, for durus._persistent_accel.
 *
 * Why a list threaded through the objects' own C fields: the first touch of
 * an object in a transaction must make it the most recently used one, and the
 * pure path's OrderedDict keyed by id costs a hash lookup and a node for it;
 * here it is four pointer stores, and the list holds a strong reference to
 * each object it links.  The methods are those of connection.py's
 * ReferenceContainer (the reference), which the tests compare it with.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_persistent_accel.h"

PBObject *
accel_as_pb(PyObject *op)
{
    if (!PB_Check(op)) {
        PyErr_Format(PyExc_TypeError, "not a persistent object: %.200s", Py_TYPE(op)->tp_name);
        return NULL;
    }
    return (PBObject *)op;
}

static PyObject *
recent_add(RecentObject *self, PyObject *op)
{
    PBObject *obj = accel_as_pb(op);
    if (obj == NULL) {
        return NULL;
    }
    ring_touch(self, obj);
    Py_RETURN_NONE;
}

static PyObject *
recent_discard(RecentObject *self, PyObject *op)
{
    if (PB_Check(op) && ((PBObject *)op)->ring == self) {
        ring_unlink(self, (PBObject *)op);
        Py_DECREF(op);
    }
    Py_RETURN_NONE;
}

static PyObject *
recent_pop_oldest(RecentObject *self, PyObject *Py_UNUSED(ignored))
{
    PBObject *obj = self->first;
    if (obj == NULL) {
        PyErr_SetString(PyExc_KeyError, "pop_oldest(): no recent objects");
        return NULL;
    }
    ring_unlink(self, obj);
    return (PyObject *)obj;  /* the list's reference */
}

static PyObject *
recent_push_oldest(RecentObject *self, PyObject *op)
{
    PBObject *obj = accel_as_pb(op);
    if (obj == NULL) {
        return NULL;
    }
    if (obj->ring == self) {
        ring_unlink(self, obj);
    }
    else {
        ring_take(obj);
    }
    ring_link_first(self, obj);
    Py_RETURN_NONE;
}

static PyObject *
recent_list(RecentObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyList_New(self->length);
    Py_ssize_t index = 0;
    if (result == NULL) {
        return NULL;
    }
    for (PBObject *obj = self->first; obj != NULL; obj = obj->next) {
        Py_INCREF(obj);
        PyList_SET_ITEM(result, index++, (PyObject *)obj);
    }
    return result;
}

static PyObject *
recent_iter(RecentObject *self)
{
    PyObject *items = recent_list(self, NULL);
    PyObject *iterator;
    if (items == NULL) {
        return NULL;
    }
    iterator = PyObject_GetIter(items);
    Py_DECREF(items);
    return iterator;
}

static Py_ssize_t
recent_length(RecentObject *self)
{
    return self->length;
}

static int
recent_contains(RecentObject *self, PyObject *op)
{
    return PB_Check(op) && ((PBObject *)op)->ring == self;
}

static int
recent_traverse(RecentObject *self, visitproc visit, void *arg)
{
    for (PBObject *obj = self->first; obj != NULL; obj = obj->next) {
        Py_VISIT(obj);
    }
    return 0;
}

static int
recent_clear(RecentObject *self)
{
    /* One object at a time, the list consistent at every step: releasing a
     * reference may run code (__del__, weakref callbacks) that moves, adds or
     * drops objects of this very list.  (No detached copy either: allocating
     * one can fail, and a list freed with objects still pointing to it would
     * leave them a dangling ring.) */
    PBObject *obj;
    while ((obj = self->first) != NULL) {
        ring_unlink(self, obj);
        Py_DECREF(obj);
    }
    return 0;
}

static void
recent_dealloc(RecentObject *self)
{
    PyObject_GC_UnTrack(self);
    recent_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef recent_methods[] = {
    {"add", (PyCFunction)recent_add, METH_O,
     "Make obj the most recently accessed object (adding it if absent)."},
    {"discard", (PyCFunction)recent_discard, METH_O, "Drop obj if present."},
    {"pop_oldest", (PyCFunction)recent_pop_oldest, METH_NOARGS,
     "Remove and return the least recently accessed object."},
    {"push_oldest", (PyCFunction)recent_push_oldest, METH_O,
     "Make obj the least recently accessed object."},
    {"list", (PyCFunction)recent_list, METH_NOARGS, "The objects, oldest first."},
    {NULL}
};

static PySequenceMethods recent_as_sequence = {
    .sq_length = (lenfunc)recent_length,
    .sq_contains = (objobjproc)recent_contains,
};

PyTypeObject RecentType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus._persistent_accel.RecentObjects",
    .tp_doc = "Strong references to persistent objects, least recently accessed first.",
    .tp_basicsize = sizeof(RecentObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)recent_dealloc,
    .tp_traverse = (traverseproc)recent_traverse,
    .tp_clear = (inquiry)recent_clear,
    .tp_iter = (getiterfunc)recent_iter,
    .tp_as_sequence = &recent_as_sequence,
    .tp_methods = recent_methods,
};

