from _helpers import accuracy


def test_fixture_models_are_trained(digits, linear_model, cnn_model, mlp_model):
    for m in (linear_model, cnn_model, mlp_model):
        assert accuracy(m, digits["x_test"], digits["y_test"]) > 0.9
