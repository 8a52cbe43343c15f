/* Hot variants on the C path, for durus._persistent_accel.
 *
 * Why: PersistentBase's tracking getattro runs on every read, and a type with
 * its own getattro keeps CPython 3.11+ from specializing attribute reads, so a
 * loaded object read at most as fast as ZODB's.  After the first read of an
 * object in a transaction nothing needs tracking until the transaction ends,
 * so the object's type is switched to a subclass of its class that reads
 * through object.__getattribute__ (made by persistent.py's variant hook, once
 * per class), and back when the transaction serial changes.  Writes stay
 * tracked: the variant inherits PersistentBase's setattro.
 *
 * Why not __class__ assignment: on 3.11+ it first turns the compact per-class
 * attribute storage into a real dict (memory, slower reads).  The switch here
 * is the one that assignment makes once that is done, and it keeps the compact
 * storage valid because the variant adds nothing to its class's layout
 * (checked) and, on 3.11-3.13, reads that storage through the very key table
 * of its class: adopt_variant makes the variant share it.  That table is
 * CPython's PyHeapTypeObject.ht_cached_keys, whose reference count is the
 * first field of a struct the public headers leave opaque; on any other
 * version, and on a free-threaded build, the switch is off (no variants).
 *
 * Invariant: an object runs as a hot variant only while its _p_serial is its
 * connection's transaction_serial and it is not a ghost.  Every way out
 * cools it: a change of the serial (the end of a transaction) cools every
 * object the connection heated, setting _p_status to GHOST or any _p_serial
 * cools the object.  Cooling is always safe; only heating needs the proofs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_persistent_accel.h"

#if defined(Py_GIL_DISABLED) || PY_VERSION_HEX >= 0x030E0000
#define VARIANTS_SUPPORTED 0
#else
#define VARIANTS_SUPPORTED 1
#endif

static PyObject *variant_hook = NULL;  /* persistent._make_hot_variant */
/* class -> its hot variant, or None (it never switches); variant -> itself.
 * Entries are never removed, so the classes, and the borrowed pointers of
 * the one-entry cache below, stay valid for the life of the process. */
static PyObject *variants = NULL;
static PyTypeObject *last_type = NULL;
static PyObject *last_variant = NULL;
static PyObject *str_getattribute = NULL;
static PyObject *base_getattribute = NULL;  /* PersistentBase.__getattribute__ */

/* variants[tp], borrowed, or NULL (then an error only if one is set). */
static inline PyObject *
known_variant(PyTypeObject *tp)
{
    PyObject *found;
    if (tp == last_type) {
        return last_variant;
    }
    found = PyDict_GetItemWithError(variants, (PyObject *)tp);
    if (found != NULL) {
        last_type = tp;
        last_variant = found;
    }
    return found;
}

/* 1 if variant may stand in for cls (and now shares its key table), 0 if
 * not, -1 on error. */
static int
adopt_variant(PyTypeObject *cls, PyObject *made)
{
    PyTypeObject *variant;
    const unsigned long layout_flags = Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HEAPTYPE
#ifdef Py_TPFLAGS_MANAGED_DICT
        | Py_TPFLAGS_MANAGED_DICT
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
        | Py_TPFLAGS_MANAGED_WEAKREF
#endif
#ifdef Py_TPFLAGS_INLINE_VALUES
        | Py_TPFLAGS_INLINE_VALUES
#endif
        ;
    if (!PyType_Check(made)) {
        PyErr_Format(PyExc_TypeError, "the variant hook returned %R, not a class", made);
        return -1;
    }
    variant = (PyTypeObject *)made;
    if (!VARIANTS_SUPPORTED || variant->tp_base != cls
        || !(cls->tp_flags & Py_TPFLAGS_HEAPTYPE)
        || variant->tp_basicsize != cls->tp_basicsize
        || variant->tp_itemsize != cls->tp_itemsize
        || variant->tp_dictoffset != cls->tp_dictoffset
        || variant->tp_weaklistoffset != cls->tp_weaklistoffset
        || ((variant->tp_flags ^ cls->tp_flags) & layout_flags) != 0
        || variant->tp_dealloc != cls->tp_dealloc
        || variant->tp_setattro != cls->tp_setattro
        || variant->tp_getattro == PBType.tp_getattro
        || _PyType_Lookup(cls, str_getattribute) != base_getattribute) {
        return 0;  /* the last: cls reads through a __getattribute__ of its own */
    }
#if VARIANTS_SUPPORTED && PY_VERSION_HEX >= 0x030B0000
    if (cls->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        PyHeapTypeObject *own = (PyHeapTypeObject *)cls, *other = (PyHeapTypeObject *)variant;
        Py_ssize_t *refcount;
        if (own->ht_cached_keys == NULL || other->ht_cached_keys == NULL) {
            return 0;
        }
        refcount = (Py_ssize_t *)own->ht_cached_keys;  /* dk_refcnt, on 3.11-3.13 */
        if (*refcount <= 0 || *refcount > (Py_ssize_t)1 << 30) {
            return 0;  /* immortal or not what we think it is: do not touch */
        }
        if (own->ht_cached_keys != other->ht_cached_keys) {
            /* The variant's own, still empty table is left allocated (a few
             * hundred bytes per class): freeing it needs CPython internals. */
            (*refcount)++;
            other->ht_cached_keys = own->ht_cached_keys;
            PyType_Modified(variant);
        }
    }
#endif
    return 1;
}

/* The variant of tp (borrowed; None if its objects never switch), made on
 * first need by the hook (Python code). */
static PyObject *
variant_of(PyTypeObject *tp)
{
    PyObject *found = known_variant(tp), *made;
    int adopted;
    if (found != NULL || PyErr_Occurred()) {
        return found;
    }
    if (variant_hook == NULL || !VARIANTS_SUPPORTED) {
        made = Py_None;
        Py_INCREF(made);
    }
    else {
        made = PyObject_CallOneArg(variant_hook, (PyObject *)tp);
        if (made == NULL) {
            return NULL;
        }
        found = known_variant(tp);  /* the hook may have come here itself */
        if (found != NULL || PyErr_Occurred()) {
            Py_DECREF(made);
            return found;
        }
    }
    if (made != Py_None) {
        adopted = adopt_variant(tp, made);
        if (adopted < 0) {
            Py_DECREF(made);
            return NULL;
        }
        if (adopted == 0 || PyDict_SetItem(variants, made, made) < 0) {
            Py_SETREF(made, Py_None);
            Py_INCREF(made);
        }
        PyErr_Clear();
    }
    if (PyDict_SetItem(variants, (PyObject *)tp, made) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    Py_DECREF(made);
    return known_variant(tp);
}

int
accel_heat(PyObject *hot, PBObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *variant;
    if (hot == NULL || obj->status == GHOST) {
        return 0;
    }
    variant = known_variant(tp);
    if (variant == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        /* Once per class: the hook runs Python code, which may do anything
         * to obj; start again from what it left. */
        Py_INCREF(obj);
        Py_INCREF(hot);
        variant = variant_of(tp);
        if (variant != NULL && Py_TYPE(obj) == tp && obj->status != GHOST) {
            int result = accel_heat(hot, obj);
            Py_DECREF(hot);
            Py_DECREF(obj);
            return result;
        }
        Py_DECREF(hot);
        Py_DECREF(obj);
        return variant == NULL ? -1 : 0;
    }
    if (variant == Py_None || variant == (PyObject *)tp) {
        return 0;
    }
    if (PyList_Append(hot, (PyObject *)obj) < 0) {
        return -1;
    }
    Py_INCREF(variant);
    Py_SET_TYPE(obj, (PyTypeObject *)variant);
    Py_DECREF(tp);  /* variants keeps it */
    return 0;
}

void
accel_cool(PBObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj), *cls;
    if (known_variant(tp) != (PyObject *)tp) {
        PyErr_Clear();
        return;
    }
    cls = tp->tp_base;
    Py_INCREF(cls);
    Py_SET_TYPE(obj, cls);
    Py_DECREF(tp);  /* variants keeps it */
}

int
accel_cool_all(PyObject *hot)
{
    Py_ssize_t index, count;
    if (hot == NULL || (count = PyList_GET_SIZE(hot)) == 0) {
        return 0;
    }
    for (index = 0; index < count; index++) {
        accel_cool((PBObject *)PyList_GET_ITEM(hot, index));
    }
    /* Dropping the references may run code (finalizers): last. */
    return PyList_SetSlice(hot, 0, count, NULL);
}

/* _p_serial and _p_status: setting either may end the object's untracked
 * reads (see _accel_variants.c), so they are not plain members. */
static PyObject *
pb_get_serial(PBObject *self, void *closure)
{
    return PyLong_FromLongLong(self->serial);
}

static int
pb_set_serial(PBObject *self, PyObject *value, void *closure)
{
    long long serial;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "can't delete numeric/char attribute");
        return -1;
    }
    serial = PyLong_AsLongLong(value);
    if (serial == -1 && PyErr_Occurred()) {
        return -1;
    }
    accel_cool(self);
    self->serial = serial;
    return 0;
}

static PyObject *
pb_get_status(PBObject *self, void *closure)
{
    return PyLong_FromLong(self->status);
}

static int
pb_set_status(PBObject *self, PyObject *value, void *closure)
{
    long status;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "can't delete numeric/char attribute");
        return -1;
    }
    status = PyLong_AsLong(value);
    if (status == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (status < INT_MIN || status > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "_p_status out of range");
        return -1;
    }
    if (status == GHOST) {
        accel_cool(self);
    }
    self->status = (int)status;
    return 0;
}

PyGetSetDef accel_pb_getset[] = {
    {"_p_serial", (getter)pb_get_serial, (setter)pb_set_serial, NULL, NULL},
    {"_p_status", (getter)pb_get_status, (setter)pb_set_status, NULL, NULL},
    {NULL}
};

static PyObject *
set_variant_hook(PyObject *module, PyObject *hook)
{
    Py_INCREF(hook);
    Py_XSETREF(variant_hook, hook);
    Py_RETURN_NONE;
}

static PyObject *
py_variant_of(PyObject *module, PyObject *cls)
{
    PyObject *found;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PBType)) {
        PyErr_Format(PyExc_TypeError, "variant_of(): %R is not a persistent class", cls);
        return NULL;
    }
    found = variant_of((PyTypeObject *)cls);
    Py_XINCREF(found);
    return found;
}

static PyObject *
py_cool(PyObject *module, PyObject *op)
{
    PBObject *obj = accel_as_pb(op);
    if (obj == NULL) {
        return NULL;
    }
    accel_cool(obj);
    Py_RETURN_NONE;
}

static PyMethodDef variant_functions[] = {
    {"set_variant_hook", (PyCFunction)set_variant_hook, METH_O,
     "The function that makes a class's hot variant (or returns None)."},
    {"variant_of", (PyCFunction)py_variant_of, METH_O,
     "The hot variant of a persistent class, made on first need; None if it has none."},
    {"cool", (PyCFunction)py_cool, METH_O,
     "Switch an object running as a hot variant back to its own class."},
    {NULL}
};

int
accel_variants_add(PyObject *module)
{
    variants = PyDict_New();
    str_getattribute = PyUnicode_InternFromString("__getattribute__");
    if (variants == NULL || str_getattribute == NULL
        || PyModule_AddFunctions(module, variant_functions) < 0) {
        return -1;
    }
    base_getattribute = PyDict_GetItemWithError(PBType.tp_dict, str_getattribute);
    if (base_getattribute == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PersistentBase has no __getattribute__");
        return -1;
    }
    Py_INCREF(base_getattribute);
    return PyModule_AddIntConstant(module, "VARIANTS_SUPPORTED", VARIANTS_SUPPORTED);
}
