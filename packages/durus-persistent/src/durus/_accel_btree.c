/* The BTree part of the C accelerator (linked into durus._persistent_accel).
 *
 * Why: a key lookup or an iteration in Python runs a frame (a generator for
 * iteration) per node and a bound method per step; that, not the data, was
 * most of the cost of BTree reads.  Both here follow btree.py rule for rule:
 * every attribute read of a node goes through the node's getattro (ghost
 * load, first touch, in the same order as the Python code), comparisons are
 * bisect_left's, and lists are read live, as Python's iterators read them.
 *
 *   bnode_search(node, key)     BNode.search
 *   iterate_bnode(node, kind)   iter(node) (kind 0: items, 1: keys, 2: values)
 *   iterate_btree(tree, kind)   the same over tree.root, read at the first next()
 *   set_bnode_iter(function)    the BNode.__iter__ whose nodes are walked here
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_persistent_accel.h"

static PyObject *str_items = NULL;
static PyObject *str_nodes = NULL;
static PyObject *str_root = NULL;
static PyObject *str_iter = NULL;
/* BNode.__iter__ of btree.py: children whose class has it are walked in C. */
static PyObject *bnode_iter_function = NULL;

/* items[index][0], the key of an item (operator.itemgetter(0) in btree.py). */
static PyObject *
key_at(PyObject *items, Py_ssize_t index)
{
    PyObject *item = PySequence_GetItem(items, index);
    PyObject *key;
    if (item == NULL) {
        return NULL;
    }
    key = PySequence_GetItem(item, 0);
    Py_DECREF(item);
    return key;
}

/* BNode.search(node, key) rule for rule. */
static PyObject *
bnode_search(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *node, *key;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bnode_search(node, key)");
        return NULL;
    }
    node = args[0];
    key = args[1];
    Py_INCREF(node);
    for (;;) {
        PyObject *items = PyObject_GetAttr(node, str_items), *nodes, *child;
        Py_ssize_t low = 0, high, position;
        if (items == NULL) {
            goto fail_node;
        }
        high = PySequence_Size(items);
        if (high < 0) {
            goto fail_items;
        }
        while (low < high) {
            Py_ssize_t middle = low + (high - low) / 2;
            PyObject *middle_key = key_at(items, middle);
            int less;
            if (middle_key == NULL) {
                goto fail_items;
            }
            less = PyObject_RichCompareBool(middle_key, key, Py_LT);
            Py_DECREF(middle_key);
            if (less < 0) {
                goto fail_items;
            }
            if (less) {
                low = middle + 1;
            }
            else {
                high = middle;
            }
        }
        position = low;
        /* Again: a comparison may have run code that changed the list. */
        high = PySequence_Size(items);
        if (high < 0) {
            goto fail_items;
        }
        if (position < high) {
            PyObject *item = PySequence_GetItem(items, position), *item_key, *equal;
            int found;
            if (item == NULL) {
                goto fail_items;
            }
            item_key = PySequence_GetItem(item, 0);
            if (item_key == NULL) {
                Py_DECREF(item);
                goto fail_items;
            }
            /* `items[position][0] == key` as Python spells it (no identity shortcut). */
            equal = PyObject_RichCompare(item_key, key, Py_EQ);
            Py_DECREF(item_key);
            found = equal == NULL ? -1 : PyObject_IsTrue(equal);
            Py_XDECREF(equal);
            if (found != 0) {
                Py_DECREF(items);
                Py_DECREF(node);
                if (found < 0) {
                    Py_DECREF(item);
                    return NULL;
                }
                return item;
            }
            Py_DECREF(item);
        }
        Py_DECREF(items);
        nodes = PyObject_GetAttr(node, str_nodes);
        if (nodes == NULL) {
            goto fail_node;
        }
        if (nodes == Py_None) {
            Py_DECREF(nodes);
            Py_DECREF(node);
            Py_RETURN_NONE;
        }
        child = PySequence_GetItem(nodes, position);
        Py_DECREF(nodes);
        if (child == NULL) {
            goto fail_node;
        }
        Py_SETREF(node, child);
        /* A tree whose nodes form a cycle loops forever, as BNode.search
         * does; like it, stay interruptible (Ctrl-C). */
        if (PyErr_CheckSignals() < 0) {
            goto fail_node;
        }
        continue;
    fail_items:
        Py_DECREF(items);
    fail_node:
        Py_DECREF(node);
        return NULL;
    }
}

/* -- iteration ------------------------------------------------------------------ */

/* One node being walked, what one BNode.__iter__ generator frame holds:
 *
 *     nodes = self.nodes
 *     if nodes is None:
 *         yield from self.items
 *     else:
 *         for position, item in enumerate(self.items):
 *             yield from nodes[position]
 *             yield item
 *         yield from nodes[-1]
 *
 * A child whose class has another __iter__ is a "foreign" frame: its
 * iterator is asked for items until it stops (yield from). */
enum frame_state {
    FRESH,        /* nothing read yet (the generator has not started) */
    ITEMS,        /* walking items (a leaf's, or between an internal node's children) */
    IN_CHILD,     /* in nodes[position]; `pending` is yielded when it ends */
    IN_LAST,      /* in nodes[-1]; this node ends when it does */
    FOREIGN,      /* `foreign` is another iterator, delegated to */
};

typedef struct {
    PyObject *node;
    PyObject *nodes;    /* Py_None for a leaf */
    PyObject *items;
    PyObject *items_iter;  /* iter(items) when items is not exactly a list */
    PyObject *pending;
    PyObject *foreign;
    Py_ssize_t index;      /* of the next item (exact lists) or position count */
    enum frame_state state;
} Frame;

typedef struct {
    PyObject_HEAD
    Frame *frames;
    Py_ssize_t depth;
    Py_ssize_t capacity;
    PyObject *tree;   /* iterate_btree: the BTree whose root is read at the first next() */
    int kind;
    int running;      /* in next(): code it runs must not re-enter it (frames may move) */
} BIterObject;

static void
frame_clear(Frame *frame)
{
    Py_CLEAR(frame->node);
    Py_CLEAR(frame->nodes);
    Py_CLEAR(frame->items);
    Py_CLEAR(frame->items_iter);
    Py_CLEAR(frame->pending);
    Py_CLEAR(frame->foreign);
}

/* The iterator ends (as a generator that returned or raised does). */
static void
biter_finish(BIterObject *self)
{
    while (self->depth > 0) {
        self->depth--;
        frame_clear(&self->frames[self->depth]);
    }
    Py_CLEAR(self->tree);
}

/* Push the walk of child, as `yield from child` starts it (iter(child)): in
 * C if its class's __iter__ is BNode's (always, for `own`: the node that
 * BNode.__iter__ was called on), otherwise through its own iterator. */
static int
biter_push(BIterObject *self, PyObject *child, int own)
{
    Frame *frame;
    PyObject *foreign = NULL;
    if (!own && _PyType_Lookup(Py_TYPE(child), str_iter) != bnode_iter_function) {
        foreign = PyObject_GetIter(child);
        if (foreign == NULL) {
            return -1;
        }
    }
    if (self->depth == self->capacity) {
        Py_ssize_t capacity = self->capacity * 2 + 8;
        Frame *frames = PyMem_Realloc(self->frames, (size_t)capacity * sizeof(Frame));
        if (frames == NULL) {
            Py_XDECREF(foreign);
            PyErr_NoMemory();
            return -1;
        }
        self->frames = frames;
        self->capacity = capacity;
    }
    frame = &self->frames[self->depth++];
    memset(frame, 0, sizeof(Frame));
    Py_INCREF(child);
    frame->node = child;
    frame->foreign = foreign;
    frame->state = foreign != NULL ? FOREIGN : FRESH;
    return 0;
}

static void
biter_pop(BIterObject *self)
{
    self->depth--;
    frame_clear(&self->frames[self->depth]);
}

/* Each item is a pointer to a tuple that points to the key and value: three
 * objects apart in memory, most of them out of the CPU's caches in a large
 * tree.  Ask for the tuples a few items ahead, and for the key and value of
 * nearer ones (whose tuples were asked for before), so that they arrive while
 * the caller works on this one.  A hint only: nothing is read here. */
#define TUPLES_AHEAD 8
#define PARTS_AHEAD 4

static inline void
prefetch_ahead(PyObject *items, Py_ssize_t index, Py_ssize_t size)
{
#if defined(__GNUC__) || defined(__clang__)
    if (index + TUPLES_AHEAD < size) {
        __builtin_prefetch(PyList_GET_ITEM(items, index + TUPLES_AHEAD));
    }
    if (index + PARTS_AHEAD < size) {
        PyObject *near = PyList_GET_ITEM(items, index + PARTS_AHEAD);
        if (PyTuple_CheckExact(near) && PyTuple_GET_SIZE(near) == 2) {
            __builtin_prefetch(PyTuple_GET_ITEM(near, 0));
            __builtin_prefetch(PyTuple_GET_ITEM(near, 1));
        }
    }
#else
    (void)items;
    (void)index;
    (void)size;
#endif
}

/* The next item of frame's items, as a list iterator (or iter(items)) gives
 * it: a new reference, or NULL with no error when they are exhausted. */
static PyObject *
frame_next_item(Frame *frame)
{
    if (frame->items_iter != NULL) {
        return PyIter_Next(frame->items_iter);
    }
    if (frame->items != NULL && frame->index < PyList_GET_SIZE(frame->items)) {
        PyObject *item = PyList_GET_ITEM(frame->items, frame->index);
        Py_ssize_t size = PyList_GET_SIZE(frame->items);
        prefetch_ahead(frame->items, frame->index, size);
        frame->index++;
        Py_INCREF(item);
        return item;
    }
    Py_CLEAR(frame->items);  /* exhausted for good, like a list iterator */
    return NULL;
}

/* nodes[position] (nodes[-1] for position -1), as Python indexes it. */
static PyObject *
child_at(PyObject *nodes, Py_ssize_t position)
{
    PyObject *index, *child;
    if (PyList_CheckExact(nodes)) {
        Py_ssize_t size = PyList_GET_SIZE(nodes);
        Py_ssize_t at = position < 0 ? position + size : position;
        if (at >= 0 && at < size) {
            child = PyList_GET_ITEM(nodes, at);
            Py_INCREF(child);
            return child;
        }
    }
    index = PyLong_FromSsize_t(position);
    if (index == NULL) {
        return NULL;
    }
    child = PyObject_GetItem(nodes, index);
    Py_DECREF(index);
    return child;
}

/* What the iterator yields for item: the item, item[0] or item[1]. */
static PyObject *
biter_result(BIterObject *self, PyObject *item)
{
    PyObject *index, *part;
    Py_ssize_t at;
    if (self->kind == 0) {
        return item;
    }
    at = self->kind == 1 ? 0 : 1;
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) > at) {
        part = PyTuple_GET_ITEM(item, at);
        Py_INCREF(part);
        Py_DECREF(item);
        return part;
    }
    index = PyLong_FromSsize_t(at);
    part = index == NULL ? NULL : PyObject_GetItem(item, index);
    Py_XDECREF(index);
    Py_DECREF(item);
    return part;
}

/* Start a fresh frame: read nodes, then items, through the node's getattro. */
static int
frame_start(Frame *frame)
{
    frame->nodes = PyObject_GetAttr(frame->node, str_nodes);
    if (frame->nodes == NULL) {
        return -1;
    }
    frame->items = PyObject_GetAttr(frame->node, str_items);
    if (frame->items == NULL) {
        return -1;
    }
    if (!PyList_CheckExact(frame->items)) {
        frame->items_iter = PyObject_GetIter(frame->items);
        if (frame->items_iter == NULL) {
            return -1;
        }
    }
    frame->index = 0;
    frame->state = ITEMS;
    return 0;
}

static PyObject *biter_step(BIterObject *self);

static PyObject *
biter_next(BIterObject *self)
{
    PyObject *result;
    if (self->running) {
        /* As a generator refuses: a node's attribute read ran code that
         * asked this very iterator for its next item. */
        PyErr_SetString(PyExc_ValueError, "BTree iterator already executing");
        return NULL;
    }
    self->running = 1;
    result = biter_step(self);
    self->running = 0;
    return result;
}

static PyObject *
biter_step(BIterObject *self)
{
    if (self->depth > 0) {
        /* The common step, without the state machine: the next (key, value)
         * tuple of a leaf's list.  Read in place: a key or a value needs no
         * reference to the tuple (its cache line is read, never written). */
        Frame *leaf = &self->frames[self->depth - 1];
        if (leaf->state == ITEMS && leaf->nodes == Py_None && leaf->items != NULL
            && leaf->items_iter == NULL) {
            Py_ssize_t index = leaf->index, size = PyList_GET_SIZE(leaf->items);
            if (index < size) {
                PyObject *item = PyList_GET_ITEM(leaf->items, index);
                if (self->kind == 0 || (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2)) {
                    PyObject *result = self->kind == 0 ? item
                        : PyTuple_GET_ITEM(item, self->kind == 1 ? 0 : 1);
                    prefetch_ahead(leaf->items, index, size);
                    leaf->index = index + 1;
                    Py_INCREF(result);
                    return result;
                }
            }
        }
    }
    if (self->tree != NULL) {
        /* `for item in self.root`, at the generator's first step. */
        PyObject *tree = self->tree, *root;
        self->tree = NULL;
        root = PyObject_GetAttr(tree, str_root);
        Py_DECREF(tree);
        if (root == NULL) {
            return NULL;
        }
        if (biter_push(self, root, 0) < 0) {
            Py_DECREF(root);
            biter_finish(self);
            return NULL;
        }
        Py_DECREF(root);
    }
    while (self->depth > 0) {
        Frame *frame = &self->frames[self->depth - 1];
        PyObject *item, *child;
        Py_ssize_t position;
        switch (frame->state) {
        case FRESH:
            if (frame_start(frame) < 0) {
                goto fail;
            }
            continue;
        case FOREIGN:
            item = PyIter_Next(frame->foreign);
            if (item != NULL) {
                return biter_result(self, item);
            }
            if (PyErr_Occurred()) {
                goto fail;
            }
            biter_pop(self);
            break;
        case ITEMS:
            item = frame_next_item(frame);
            if (item == NULL && PyErr_Occurred()) {
                goto fail;
            }
            if (frame->nodes == Py_None) {
                if (item != NULL) {
                    return biter_result(self, item);
                }
                biter_pop(self);
                break;
            }
            if (item != NULL) {
                position = frame->items_iter != NULL ? frame->index++ : frame->index - 1;
                frame->pending = item;
                frame->state = IN_CHILD;
            }
            else {
                position = -1;
                frame->state = IN_LAST;
            }
            child = child_at(frame->nodes, position);
            if (child == NULL) {
                goto fail;
            }
            if (biter_push(self, child, 0) < 0) {
                Py_DECREF(child);
                goto fail;
            }
            Py_DECREF(child);
            continue;
        default:
            /* IN_CHILD or IN_LAST with the child popped: cannot be on top. */
            PyErr_SetString(PyExc_SystemError, "BTree iterator in a bad state");
            goto fail;
        }
        /* A frame ended: its parents go on after their `yield from`. */
        while (self->depth > 0) {
            Frame *parent = &self->frames[self->depth - 1];
            if (parent->state == IN_CHILD) {
                item = parent->pending;
                parent->pending = NULL;
                parent->state = ITEMS;
                return biter_result(self, item);
            }
            if (parent->state != IN_LAST) {
                break;
            }
            biter_pop(self);
        }
    }
    return NULL;
fail:
    biter_finish(self);
    return NULL;
}

static int
biter_traverse(BIterObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->depth; i++) {
        Frame *frame = &self->frames[i];
        Py_VISIT(frame->node);
        Py_VISIT(frame->nodes);
        Py_VISIT(frame->items);
        Py_VISIT(frame->items_iter);
        Py_VISIT(frame->pending);
        Py_VISIT(frame->foreign);
    }
    Py_VISIT(self->tree);
    return 0;
}

static int
biter_clear(BIterObject *self)
{
    biter_finish(self);
    return 0;
}

static void
biter_dealloc(BIterObject *self)
{
    PyObject_GC_UnTrack(self);
    biter_finish(self);
    PyMem_Free(self->frames);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject BIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "durus.btree.BTreeIterator",
    .tp_doc = "The items, keys or values of a BNode's subtree, in key order.",
    .tp_basicsize = sizeof(BIterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)biter_dealloc,
    .tp_traverse = (traverseproc)biter_traverse,
    .tp_clear = (inquiry)biter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)biter_next,
};

static PyObject *
make_iterator(PyObject *const *args, Py_ssize_t nargs, const char *usage, int of_tree)
{
    BIterObject *self;
    long kind;
    if (nargs != 2 || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    kind = PyLong_AsLong(args[1]);
    if (kind < 0 || kind > 2) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "kind is 0 (items), 1 (keys) or 2 (values)");
        }
        return NULL;
    }
    self = PyObject_GC_New(BIterObject, &BIterType);
    if (self == NULL) {
        return NULL;
    }
    self->frames = NULL;
    self->depth = 0;
    self->capacity = 0;
    self->tree = NULL;
    self->kind = (int)kind;
    self->running = 0;
    if (of_tree) {
        Py_INCREF(args[0]);
        self->tree = args[0];
    }
    else if (biter_push(self, args[0], 1) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
iterate_bnode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return make_iterator(args, nargs, "iterate_bnode(node, kind)", 0);
}

static PyObject *
iterate_btree(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return make_iterator(args, nargs, "iterate_btree(tree, kind)", 1);
}

static PyObject *
set_bnode_iter(PyObject *module, PyObject *function)
{
    Py_INCREF(function);
    Py_XSETREF(bnode_iter_function, function);
    Py_RETURN_NONE;
}

static PyMethodDef btree_methods[] = {
    {"bnode_search", (PyCFunction)(void (*)(void))bnode_search, METH_FASTCALL,
     "BNode.search(node, key) in C: the item with key in node's subtree, or None."},
    {"iterate_bnode", (PyCFunction)(void (*)(void))iterate_bnode, METH_FASTCALL,
     "iter(node) in C: its subtree's items (kind 0), keys (1) or values (2)."},
    {"iterate_btree", (PyCFunction)(void (*)(void))iterate_btree, METH_FASTCALL,
     "The same over tree.root, read at the first next() as a generator would."},
    {"set_bnode_iter", (PyCFunction)set_bnode_iter, METH_O,
     "The BNode.__iter__ function whose nodes the iterators walk in C."},
    {NULL}
};

int
accel_btree_add(PyObject *module)
{
    if (PyType_Ready(&BIterType) < 0) {
        return -1;
    }
    str_items = PyUnicode_InternFromString("items");
    str_nodes = PyUnicode_InternFromString("nodes");
    str_root = PyUnicode_InternFromString("root");
    str_iter = PyUnicode_InternFromString("__iter__");
    if (str_items == NULL || str_nodes == NULL || str_root == NULL || str_iter == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, btree_methods);
}
