"""Inference releases the GIL: Python threads run models at once, and give
the answers one thread gives."""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import albef
from conftest import CAPTIONS, CHECKPOINT, CONFIG, IMAGES


def test_threads_sharing_a_model_give_the_answers_of_one_thread(model):
    def work(i):
        return (model.embed_images(IMAGES[i:i + 3]), model.embed_texts(CAPTIONS[i:i + 5]),
                model.gradcam(IMAGES[i], CAPTIONS[i])["map"])
    alone = [work(i) for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(work, range(12)))
    for one, other in zip(alone, together):
        for a, b in zip(one, other):
            assert np.array_equal(a, b)


def test_python_runs_while_a_model_computes():
    # A thread counting while another embeds: with the GIL held through
    # inference it could not count at all until the call returned. A long
    # switch interval keeps the interpreter from handing the counter the GIL
    # between the main thread's statements, so only a released GIL lets it count.
    m = albef.Model(CONFIG, CHECKPOINT, threads=1, batch_size=2)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.1)
    counted = 0
    during = []
    stop = threading.Event()
    def count():
        nonlocal counted
        while not stop.is_set():
            counted += 1
    counter = threading.Thread(target=count)
    counter.start()
    try:
        for _ in range(3):
            before = counted
            m.embed_images(IMAGES)
            during.append(counted - before)
    finally:
        stop.set()
        counter.join()
        sys.setswitchinterval(interval)
    assert max(during) > 1000, during
