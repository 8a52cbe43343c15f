/* The optional C accelerator of durus.persistent and durus.connection.
 *
 * Why: the first read of an object in a transaction must record the access
 * (Durus's conflict rules need _p_serial == transaction_serial and a strong
 * reference in the connection's recent objects); in Python that bookkeeping
 * costs several hundred nanoseconds.  Here it is a compare, a store and a
 * move in an intrusive doubly linked list.
 *
 * What is here:
 *   PersistentBase  the four _p_ fields in a C struct, the tracking
 *                   getattro/setattro (ghost load, first touch, note change)
 *   ConnectionBase  transaction_serial as a C integer, note_access
 *   (_accel_recent.c) RecentObjects, the connection's recently accessed
 *                   objects, strongly held, least recently accessed first
 *                   (what the pure path keeps in an OrderedDict keyed by id)
 *   (_accel_btree.c) BNode.search and BTree iteration without a Python
 *                   frame per node
 *   new_ghost, setattr_plain, delattr_plain, set_load_hook,
 *   set_pristine_state (a ghost's first load without asking for __dict__)
 *
 * The pure-Python code in persistent.py and connection.py is the reference:
 * every rule here has its Python twin there, and the tests run both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_persistent_accel.h"

typedef struct {
    PyObject_HEAD
    long long serial;
    RecentObject *recent;
    /* Whether the class keeps ConnectionBase.note_access (set when made):
     * only then do first touches skip the method call. */
    int own_note_access;
} ConnObject;

static PyTypeObject ConnType;

static PyObject *load_hook = NULL;      /* persistent._load_ghost */
static PyObject *str_note_access = NULL;
static PyObject *str_note_change = NULL;
static PyObject *str_new = NULL;
static PyObject *str_setstate = NULL;
static PyObject *empty_tuple = NULL;
/* The classes of which set_pristine_state has loaded an object (see new_ghost). */
static PyObject *loaded_classes = NULL;
/* Persistent.__setstate__ (updates __dict__) and PersistentObject.__setstate__
 * (sets attributes): the functions set_pristine_state stands in for. */
static PyObject *dict_setstate = NULL;
static PyObject *slots_setstate = NULL;

/* Whether op is a ConnectionBase.  No cache of the last type seen: a borrowed
 * pointer to it would go stale once that class is freed, and an unrelated type
 * later allocated at the same address would pass (its instances then read as
 * ConnObject); a strong one would run a type's deallocation, arbitrary code,
 * in the middle of an attribute read.  tp_base is owned by op's type, which op
 * keeps alive; Connection is a direct subclass, so the walk of the MRO is rare. */
static inline int
is_conn(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    return tp == &ConnType || tp->tp_base == &ConnType || PyType_IsSubtype(tp, &ConnType);
}

/* Whether the first touches of op's objects are recorded here in C rather
 * than by calling op.note_access: a ConnectionBase whose class keeps it. */
static inline int
notes_in_c(PyObject *op)
{
    return is_conn(op) && !((ConnObject *)op)->own_note_access;
}

/* -- ConnectionBase ----------------------------------------------------------- */

/* The first access of obj in the connection's transaction (note_access). */
static inline void
conn_note_access(ConnObject *conn, PBObject *obj)
{
    if (obj->serial != conn->serial) {
        obj->serial = conn->serial;
        if (conn->recent != NULL) {
            ring_touch(conn->recent, obj);
        }
    }
}

static PyObject *base_note_access = NULL;  /* ConnectionBase.__dict__["note_access"] */

static PyObject *
conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ConnObject *self = (ConnObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->serial = 1;
        /* A subclass with its own note_access gets it called, as on the pure path. */
        self->own_note_access = _PyType_Lookup(type, str_note_access) != base_note_access;
    }
    return (PyObject *)self;
}

static int
conn_init(ConnObject *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "ConnectionBase() takes no arguments");
        return -1;
    }
    self->serial = 1;
    return 0;
}

static PyObject *
conn_py_note_access(ConnObject *self, PyObject *op)
{
    PBObject *obj = accel_as_pb(op);
    if (obj == NULL) {
        return NULL;
    }
    conn_note_access(self, obj);
    Py_RETURN_NONE;
}

static PyObject *
conn_get_serial(ConnObject *self, void *closure)
{
    return PyLong_FromLongLong(self->serial);
}

static int
conn_set_serial(ConnObject *self, PyObject *value, void *closure)
{
    long long serial;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "transaction_serial cannot be deleted");
        return -1;
    }
    serial = PyLong_AsLongLong(value);
    if (serial == -1 && PyErr_Occurred()) {
        return -1;
    }
    self->serial = serial;
    return 0;
}

static PyObject *
conn_get_recent(ConnObject *self, void *closure)
{
    if (self->recent == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(self->recent);
    return (PyObject *)self->recent;
}

static int
conn_set_recent(ConnObject *self, PyObject *value, void *closure)
{
    if (value != NULL && value != Py_None && !PyObject_TypeCheck(value, &RecentType)) {
        PyErr_SetString(PyExc_TypeError, "_recent must be a RecentObjects or None");
        return -1;
    }
    if (value == Py_None) {
        value = NULL;
    }
    Py_XINCREF(value);
    Py_XSETREF(self->recent, (RecentObject *)value);
    return 0;
}

static int
conn_traverse(ConnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->recent);
    return 0;
}

static int
conn_clear(ConnObject *self)
{
    Py_CLEAR(self->recent);
    return 0;
}

static void
conn_dealloc(ConnObject *self)
{
    PyObject_GC_UnTrack(self);
    conn_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyGetSetDef conn_getset[] = {
    {"transaction_serial", (getter)conn_get_serial, (setter)conn_set_serial,
     "The serial of the current transaction.", NULL},
    {"_recent", (getter)conn_get_recent, (setter)conn_set_recent,
     "The RecentObjects that first accesses go to.", NULL},
    {NULL}
};

static PyMethodDef conn_methods[] = {
    {"note_access", (PyCFunction)conn_py_note_access, METH_O,
     "Record the first access of obj in this transaction."},
    {NULL}
};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus.persistent.ConnectionBase",
    .tp_doc = "What persistent objects need from a connection: the transaction serial.",
    .tp_basicsize = sizeof(ConnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = conn_new,
    .tp_init = (initproc)conn_init,
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_getset = conn_getset,
    .tp_methods = conn_methods,
};

/* -- PersistentBase ------------------------------------------------------------ */

static int
ascii_equals(PyObject *name, const char *text, Py_ssize_t length)
{
    return PyUnicode_GET_LENGTH(name) == length
        && memcmp(PyUnicode_DATA(name), text, (size_t)length) == 0;
}

/* Whether an access to name loads a ghost and counts as an access (or, for
 * a write, as a change): not for _p_ names, __repr__, __class__, __setstate__. */
static int
is_tracked(PyObject *name)
{
    const Py_UCS1 *data;
    if (!PyUnicode_Check(name)) {
        return 0;  /* PyObject_GenericGetAttr raises the TypeError */
    }
    if (!PyUnicode_IS_COMPACT_ASCII(name)) {
        /* Non-ASCII names ("_p_\u00e9") and str subclasses: the same rule as
         * persistent.py's name[:3] != "_p_" and name not in _UNTRACKED. */
        if (PyUnicode_GET_LENGTH(name) >= 3 && PyUnicode_READ_CHAR(name, 0) == '_'
            && PyUnicode_READ_CHAR(name, 1) == 'p' && PyUnicode_READ_CHAR(name, 2) == '_') {
            return 0;
        }
        return PyUnicode_CompareWithASCIIString(name, "__repr__") != 0
            && PyUnicode_CompareWithASCIIString(name, "__class__") != 0
            && PyUnicode_CompareWithASCIIString(name, "__setstate__") != 0;
    }
    data = PyUnicode_1BYTE_DATA(name);
    if (PyUnicode_GET_LENGTH(name) < 3 || data[0] != '_') {
        return 1;
    }
    if (data[1] == 'p' && data[2] == '_') {
        return 0;
    }
    if (data[1] == '_') {
        if (ascii_equals(name, "__repr__", 8) || ascii_equals(name, "__class__", 9)
            || ascii_equals(name, "__setstate__", 12)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
pb_init_fields(PBObject *self)
{
    if (self != NULL) {
        self->status = UNSAVED;
        self->serial = 0;
        Py_INCREF(Py_None);
        self->connection = Py_None;
        Py_INCREF(Py_None);
        self->oid = Py_None;
    }
    return (PyObject *)self;
}

static PyObject *
pb_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    /* Through object.__new__ rather than tp_alloc alone: on CPython 3.11 and
     * 3.12 it also sets up the compact per-class attribute storage of a class
     * with a __dict__, without which the first attribute set makes a real
     * dict (more memory, slower reads). */
    return pb_init_fields((PBObject *)PyBaseObject_Type.tp_new(type, empty_tuple, NULL));
}

/* An object of type without the compact attribute storage (3.11, 3.12; on
 * 3.13 the allocation itself sets it up). */
static PyObject *
pb_alloc(PyTypeObject *type)
{
    return pb_init_fields((PBObject *)type->tp_alloc(type, 0));
}

/* Load the ghost if it is one, then record the access: the slow path of a read. */
static int
pb_touch(PBObject *self)
{
    PyObject *connection = self->connection;
    int result = 0;
    Py_INCREF(connection);
    Py_INCREF(self);
    if (self->status == GHOST) {
        PyObject *loaded;
        if (load_hook == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "durus.persistent did not set its load hook");
            result = -1;
            goto done;
        }
        loaded = PyObject_CallOneArg(load_hook, (PyObject *)self);
        if (loaded == NULL) {
            result = -1;
            goto done;
        }
        Py_DECREF(loaded);
    }
    if (notes_in_c(connection)) {
        conn_note_access((ConnObject *)connection, self);
    }
    else {
        PyObject *noted = PyObject_CallMethodOneArg(connection, str_note_access, (PyObject *)self);
        if (noted == NULL) {
            result = -1;
        }
        Py_XDECREF(noted);
    }
done:
    Py_DECREF(self);
    Py_DECREF(connection);
    return result;
}

static PyObject *
pb_getattro(PBObject *self, PyObject *name)
{
    PyObject *connection = self->connection;
    if (connection != NULL && connection != Py_None
        && (self->status == GHOST || !is_conn(connection)
            || ((ConnObject *)connection)->serial != self->serial)
        && is_tracked(name)) {
        if (self->status != GHOST && notes_in_c(connection)) {
            /* The usual first touch: no load, so no code runs that could
             * drop self or its connection, and no references are needed. */
            conn_note_access((ConnObject *)connection, self);
        }
        else if (pb_touch(self) < 0) {
            return NULL;
        }
    }
    return PyObject_GenericGetAttr((PyObject *)self, name);
}

static int
pb_setattro(PBObject *self, PyObject *name, PyObject *value)
{
    self->pristine = 0;
    if (self->status != UNSAVED && is_tracked(name)) {
        PyObject *noted = PyObject_CallMethodNoArgs((PyObject *)self, str_note_change);
        if (noted == NULL) {
            return -1;
        }
        Py_DECREF(noted);
    }
    return PyObject_GenericSetAttr((PyObject *)self, name, value);
}

static int
pb_traverse(PBObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->connection);
    Py_VISIT(self->oid);
    return 0;
}

static int
pb_clear(PBObject *self)
{
    Py_CLEAR(self->connection);
    Py_CLEAR(self->oid);
    return 0;
}

static void
pb_dealloc(PBObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->ring != NULL) {
        /* Cannot happen (a list holds a reference to each of its objects);
         * if it ever does, the list must not keep a pointer to freed memory. */
        ring_unlink(self->ring, self);
    }
    pb_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef pb_members[] = {
    {"_p_connection", T_OBJECT_EX, offsetof(PBObject, connection), 0, NULL},
    {"_p_oid", T_OBJECT_EX, offsetof(PBObject, oid), 0, NULL},
    {"_p_serial", T_LONGLONG, offsetof(PBObject, serial), 0, NULL},
    {"_p_status", T_INT, offsetof(PBObject, status), 0, NULL},
    {NULL}
};

PyTypeObject PBType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus.persistent.PersistentBase",
    .tp_doc = "The four per-object fields Durus keeps outside an object's state.",
    .tp_basicsize = sizeof(PBObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = pb_new,
    .tp_dealloc = (destructor)pb_dealloc,
    .tp_traverse = (traverseproc)pb_traverse,
    .tp_clear = (inquiry)pb_clear,
    .tp_getattro = (getattrofunc)pb_getattro,
    .tp_setattro = (setattrofunc)pb_setattro,
    .tp_members = pb_members,
};

/* -- module functions ------------------------------------------------------------ */

static PyObject *
new_ghost(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cls, *oid, *connection, *made;
    PBObject *ghost;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "new_ghost(cls, oid, connection)");
        return NULL;
    }
    cls = args[0];
    oid = args[1];
    connection = args[2];
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PBType)) {
        PyErr_Format(PyExc_TypeError, "new_ghost(): %R is not a persistent class", cls);
        return NULL;
    }
    if (((PyTypeObject *)cls)->tp_new == pb_new) {
        int loaded = PySet_Contains(loaded_classes, cls);
        if (loaded < 0) {
            return NULL;
        }
        if (loaded) {
            made = pb_new((PyTypeObject *)cls, NULL, NULL);
        }
        else {
            /* Until one object of the class has been loaded, its ghosts get
             * no compact attribute storage: on CPython 3.11 and 3.12 each
             * storage set up before the class's attribute names are known
             * shrinks the room left for them (to one name, after a BTree
             * node's worth of ghosts), and then every object of the class
             * for the life of the process needs a real dict.  Loading one
             * object records the names; ghosts made after it get the
             * compact storage. */
            made = pb_alloc((PyTypeObject *)cls);
        }
        if (made != NULL) {
            ((PBObject *)made)->pristine = 1;
        }
    }
    else {
        /* The class has its own __new__: call it as Durus does, no arguments. */
        PyObject *constructor = PyObject_GetAttr(cls, str_new);
        if (constructor == NULL) {
            return NULL;
        }
        made = PyObject_CallOneArg(constructor, cls);
        Py_DECREF(constructor);
    }
    if (made == NULL) {
        return NULL;
    }
    if (!PB_Check(made)) {
        Py_DECREF(made);
        PyErr_Format(PyExc_TypeError, "%R.__new__ made no persistent object", cls);
        return NULL;
    }
    ghost = (PBObject *)made;
    ghost->status = GHOST;
    ghost->serial = 0;
    Py_INCREF(connection);
    Py_XSETREF(ghost->connection, connection);
    Py_INCREF(oid);
    Py_XSETREF(ghost->oid, oid);
    return made;
}

static PyObject *
setattr_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setattr_plain(obj, name, value)");
        return NULL;
    }
    if (PB_Check(args[0])) {
        ((PBObject *)args[0])->pristine = 0;
    }
    if (PyObject_GenericSetAttr(args[0], args[1], args[2]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
delattr_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "delattr_plain(obj, name)");
        return NULL;
    }
    if (PB_Check(args[0])) {
        ((PBObject *)args[0])->pristine = 0;
    }
    if (PyObject_GenericSetAttr(args[0], args[1], NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* set_pristine_state(obj, state, as_dict): load state into a pristine ghost
 * attribute by attribute, and say whether it did (False: the caller's
 * general code must).  Why: the general code clears the instance __dict__
 * first, and on CPython 3.11+ merely asking for __dict__ turns the compact
 * per-class attribute storage into a real dict, which costs a dict per object
 * and slower reads.  A pristine ghost has nothing to clear.
 *
 * as_dict (Persistent.__setstate__, which updates __dict__ directly): done
 * only when every key is a str that no data descriptor of the class
 * intercepts, so that setting attributes stores exactly what update() would.
 * Otherwise (PersistentObject.__setstate__) every item is set as an
 * attribute, as that code does after its clearing. */
static PyObject *
set_pristine_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *obj, *state, *key, *value, *setstate;
    Py_ssize_t position = 0;
    int as_dict;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_pristine_state(obj, state)");
        return NULL;
    }
    obj = args[0];
    state = args[1];
    if (!PB_Check(obj) || !((PBObject *)obj)->pristine || !PyDict_CheckExact(state)
        || ((PBObject *)obj)->status != GHOST || str_setstate == NULL) {
        Py_RETURN_FALSE;
    }
    /* Only under the class's own (not overridden) __setstate__: no other
     * code may have run on the ghost since new_ghost made it. */
    setstate = _PyType_Lookup(Py_TYPE(obj), str_setstate);
    if (setstate != NULL && setstate == dict_setstate) {
        as_dict = 1;
    }
    else if (setstate != NULL && setstate == slots_setstate) {
        as_dict = 0;
    }
    else {
        Py_RETURN_FALSE;
    }
    if (as_dict) {
        while (PyDict_Next(state, &position, &key, &value)) {
            PyObject *found;
            if (!PyUnicode_CheckExact(key)) {
                Py_RETURN_FALSE;
            }
            found = _PyType_Lookup(Py_TYPE(obj), key);
            if (found != NULL && Py_TYPE(found)->tp_descr_set != NULL) {
                Py_RETURN_FALSE;
            }
        }
        position = 0;
    }
    ((PBObject *)obj)->pristine = 0;
    Py_INCREF(state);  /* a setter may run code that drops the caller's */
    while (PyDict_Next(state, &position, &key, &value)) {
        int failed;
        Py_INCREF(key);
        Py_INCREF(value);
        failed = PyObject_GenericSetAttr(obj, key, value) < 0;
        Py_DECREF(value);
        Py_DECREF(key);
        if (failed) {
            Py_DECREF(state);
            return NULL;
        }
    }
    Py_DECREF(state);
    if (PySet_Add(loaded_classes, (PyObject *)Py_TYPE(obj)) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
set_state_functions(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_state_functions(dict_setstate, slots_setstate)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(dict_setstate, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(slots_setstate, args[1]);
    Py_RETURN_NONE;
}

static PyObject *
set_load_hook(PyObject *module, PyObject *hook)
{
    Py_INCREF(hook);
    Py_XSETREF(load_hook, hook);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"new_ghost", (PyCFunction)(void (*)(void))new_ghost, METH_FASTCALL,
     "A ghost of cls (its __new__ called without arguments): state comes later."},
    {"setattr_plain", (PyCFunction)(void (*)(void))setattr_plain, METH_FASTCALL,
     "Set an attribute without tracking (object.__setattr__ refuses C bases)."},
    {"delattr_plain", (PyCFunction)(void (*)(void))delattr_plain, METH_FASTCALL,
     "Delete an attribute without tracking."},
    {"set_pristine_state", (PyCFunction)(void (*)(void))set_pristine_state, METH_FASTCALL,
     "Load state into a ghost that never had attributes; whether it did."},
    {"set_state_functions", (PyCFunction)(void (*)(void))set_state_functions, METH_FASTCALL,
     "Persistent.__setstate__ and PersistentObject.__setstate__, for set_pristine_state."},
    {"set_load_hook", (PyCFunction)set_load_hook, METH_O,
     "The function a ghost's first tracked read calls to load it."},
    {NULL}
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "durus._persistent_accel",
    .m_doc = "The C accelerator of durus.persistent (optional; see durus.persistent.accelerated).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__persistent_accel(void)
{
    PyObject *module;
    if (PyType_Ready(&PBType) < 0 || PyType_Ready(&ConnType) < 0
        || PyType_Ready(&RecentType) < 0) {
        return NULL;
    }
    str_note_access = PyUnicode_InternFromString("note_access");
    base_note_access = str_note_access == NULL ? NULL
        : PyDict_GetItemWithError(ConnType.tp_dict, str_note_access);  /* borrowed: the type keeps it */
    str_note_change = PyUnicode_InternFromString("_p_note_change");
    str_new = PyUnicode_InternFromString("__new__");
    str_setstate = PyUnicode_InternFromString("__setstate__");
    empty_tuple = PyTuple_New(0);
    loaded_classes = PySet_New(NULL);
    if (str_note_access == NULL || base_note_access == NULL || str_note_change == NULL
        || str_new == NULL
        || str_setstate == NULL || empty_tuple == NULL || loaded_classes == NULL) {
        return NULL;
    }
    module = PyModule_Create(&accel_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&PBType);
    Py_INCREF(&ConnType);
    Py_INCREF(&RecentType);
    if (PyModule_AddObject(module, "PersistentBase", (PyObject *)&PBType) < 0
        || PyModule_AddObject(module, "ConnectionBase", (PyObject *)&ConnType) < 0
        || PyModule_AddObject(module, "RecentObjects", (PyObject *)&RecentType) < 0
        || PyModule_AddIntConstant(module, "GHOST", GHOST) < 0
        || accel_btree_add(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
